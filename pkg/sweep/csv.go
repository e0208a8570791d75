package sweep

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// MaxCSVBytes bounds the cleaned_tenants.csv ReadCSV accepts: about a
// million tenants at 64 bytes a line; anything bigger is not that file.
const MaxCSVBytes = 64 << 20

// Invalid is a line of the CSV whose tenant_id is not a tenant id.
type Invalid struct {
	Line int
	// Quoted is the field, quoted and shortened (tenant.QuoteInput): safe
	// to print.
	Quoted string
}

// ReadCSV reads the tenant ids of a cleaned_tenants.csv: a header row with
// a tenant_id column (the original cleanup script writes
// "tenant_id,cleaned_at"; tenantctl ledger --csv writes tenant_id first
// too), then one tenant a row. Every id is validated with tenant.ParseID;
// those that are not tenant ids are returned in invalid (with their line),
// never used. Duplicates are returned once, in the order first seen.
// A file larger than MaxCSVBytes, malformed CSV, or a header without
// exactly one tenant_id column is an error.
func ReadCSV(r io.Reader) (ids []tenant.ID, invalid []Invalid, err error) {
	lr := &io.LimitedReader{R: r, N: MaxCSVBytes + 1}
	cr := csv.NewReader(lr)
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = true
	header, err := cr.Read()
	if err != nil {
		return nil, nil, fmt.Errorf("no header row: %w", err)
	}
	col := -1
	for i, h := range header {
		if i == 0 {
			h = strings.TrimPrefix(h, "\ufeff") // a byte-order mark, as spreadsheets write
		}
		if h == "tenant_id" {
			if col >= 0 {
				return nil, nil, errors.New("the header has two tenant_id columns")
			}
			col = i
		}
	}
	if col < 0 {
		return nil, nil, fmt.Errorf("no tenant_id column in the header %s", tenant.QuoteInput(strings.Join(header, ",")))
	}
	seen := map[tenant.ID]bool{}
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if lr.N <= 0 {
			return nil, nil, fmt.Errorf("larger than %d MiB: not a cleaned_tenants.csv", MaxCSVBytes>>20)
		}
		if err != nil {
			return nil, nil, err // a *csv.ParseError names the line
		}
		line, _ := cr.FieldPos(0)
		if col >= len(rec) {
			invalid = append(invalid, Invalid{Line: line, Quoted: "(no tenant_id field)"})
			continue
		}
		id, perr := tenant.ParseID(rec[col])
		if perr != nil {
			invalid = append(invalid, Invalid{Line: line, Quoted: tenant.QuoteInput(rec[col])})
			continue
		}
		if !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	if lr.N <= 0 {
		return nil, nil, fmt.Errorf("larger than %d MiB: not a cleaned_tenants.csv", MaxCSVBytes>>20)
	}
	return ids, invalid, nil
}
