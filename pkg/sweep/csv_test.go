package sweep_test

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/tenantcleanup/tenant-cleanup/pkg/sweep"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// The original script's cleaned_tenants.csv, tenantctl ledger's, and
// hostile files: every field that is not exactly a tenant id is reported
// (quoted, safe to print) and never returned.
func TestReadCSV(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, csv string
		ids       []tenant.ID
		invalid   []string // quoted fields
		err       string
	}{
		{name: "original script", csv: "tenant_id,cleaned_at\n" + idA + ",2026-01-02T03:04:05.123456\n" + gone + ",2026-01-02T03:04:06\n",
			ids: []tenant.ID{idA, gone}},
		{name: "ledger export, BOM, CRLF, duplicates", csv: "\ufefftenant_id,cleaned_at,requested_by\r\n" + idA + ",x,y\r\n" + idA + ",x,y\r\n",
			ids: []tenant.ID{idA}},
		{name: "another column order", csv: "cleaned_at,tenant_id\n2026-01-01," + idB + "\n", ids: []tenant.ID{idB}},
		{name: "hostile", csv: "tenant_id\n" +
			"tenant_*\n" + // a glob
			"tenant_i-ab*\n" +
			"tenant_i-[ab]\n" +
			"tenant_i-ab/../tenant_i-abc\n" +
			"onyx-files/tenant_i-ab\n" +
			"\"tenant_i-ab\nx\"\n" + // a newline in a quoted field
			"\"tenant_i-ab\"\"; DROP SCHEMA public CASCADE; --\"\n" +
			"TENANT_I-AB\n" +
			" tenant_i-ab\n" +
			"tenant_i-ab \n" +
			"tenant_i-ab:\n" +
			"public\n" +
			"\x1b]0;owned\x07\x1b[2J\n" + // terminal escapes
			"tenant_i-ab\u202e\n" + // a bidi override
			strings.Repeat("a", 10000) + "\n" +
			"\n" + // an empty line is skipped
			"=cmd|' /C calc'!A0\n" +
			gone + "\n",
			ids: []tenant.ID{gone},
			invalid: []string{`"tenant_*"`, `"tenant_i-ab*"`, `"tenant_i-[ab]"`, `"tenant_i-ab/../tenant_i-abc"`, `"onyx-files/tenant_i-ab"`,
				`"tenant_i-ab\nx"`, `"tenant_i-ab\"; DROP SCHEMA public CASCADE; --"`, `"TENANT_I-AB"`, `" tenant_i-ab"`, `"tenant_i-ab "`,
				`"tenant_i-ab:"`, `"public"`, `"\x1b]0;owned\a\x1b[2J"`, `"tenant_i-ab\u202e"`, `"` + strings.Repeat("a", 80) + `"…(10000 bytes)`,
				`"=cmd|' /C calc'!A0"`}},
		{name: "short row", csv: "cleaned_at,tenant_id\n2026-01-01\n", invalid: []string{"(no tenant_id field)"}},
		{name: "no header", csv: "", err: "no header row"},
		{name: "no tenant_id column", csv: "id,cleaned_at\n" + idA + ",x\n", err: "no tenant_id column"},
		{name: "two tenant_id columns", csv: "tenant_id,tenant_id\n" + idA + "," + idB + "\n", err: "two tenant_id columns"},
		{name: "bare quote", csv: "tenant_id\nten\"ant\n", err: "bare \""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ids, invalid, err := sweep.ReadCSV(strings.NewReader(tc.csv))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(ids) != len(tc.ids) || (len(ids) > 0 && strings.Join(idStrings(ids), ",") != strings.Join(idStrings(tc.ids), ",")) {
				t.Fatalf("ids %v, want %v", ids, tc.ids)
			}
			var got []string
			for _, in := range invalid {
				got = append(got, in.Quoted)
				if in.Line < 2 {
					t.Errorf("line %d for %s", in.Line, in.Quoted)
				}
			}
			if strings.Join(got, "\n") != strings.Join(tc.invalid, "\n") {
				t.Fatalf("invalid:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.invalid, "\n"))
			}
		})
	}
}

// A file bigger than any cleaned_tenants.csv is refused, read only up to
// the limit.
func TestReadCSVTooBig(t *testing.T) {
	t.Parallel()
	line := []byte(idA + ",2026-01-01T00:00:00\n")
	big := io.MultiReader(strings.NewReader("tenant_id,cleaned_at\n"), &repeat{line: line, n: sweep.MaxCSVBytes/len(line) + 10})
	if _, _, err := sweep.ReadCSV(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("error %v", err)
	}
}

type repeat struct {
	line []byte
	n    int
	buf  bytes.Buffer
}

func (r *repeat) Read(p []byte) (int, error) {
	for r.buf.Len() < len(p) && r.n > 0 {
		r.buf.Write(r.line)
		r.n--
	}
	if r.buf.Len() == 0 {
		return 0, io.EOF
	}
	return r.buf.Read(p)
}

func idStrings(ids []tenant.ID) []string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = string(id)
	}
	return s
}
