package ctl

import (
	"context"
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
	"github.com/tenantcleanup/tenant-cleanup/pkg/config"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// runCleanup validates every requested id first and publishes only when all
// are valid: an invalid request is refused with its reason, the exit status
// is 1 and nothing is published.
func runCleanup(ctx context.Context, c *CLI, args []string) int {
	var (
		cfg     config.NATS
		csvPath string
	)
	fs, code, ok := c.flags("cleanup", "TENANT_ID… | --csv FILE", &cfg, args, func(fs *flag.FlagSet) {
		fs.StringVar(&csvPath, "csv", "", "read tenant ids from the tenant_id column of this CSV file")
	})
	if !ok {
		return code
	}
	raw := fs.Args()
	if csvPath != "" {
		ids, err := readCSV(csvPath)
		if err != nil {
			c.errorf("%v; nothing was published", err)
			return 1
		}
		raw = append(raw, ids...)
	}
	if len(raw) == 0 {
		c.errorf("no tenant ids given: tenantctl cleanup TENANT_ID… or tenantctl cleanup --csv FILE")
		return 2
	}
	ids, invalid := validate(raw)
	if invalid > 0 {
		for _, line := range ids.refusals {
			c.errorf("%s", line)
		}
		c.errorf("refused %d of %d requests; nothing was published. Fix or remove them and run again.", invalid, len(raw))
		return 1
	}
	if !c.loadEnv(&cfg) {
		return 2
	}
	b, err := bus.Connect(ctx, cfg.NATSURL, bus.Options{Name: "tenantctl", Replicas: cfg.NATSReplicas, NoUpdate: true, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		c.errorf("%v; nothing was published", err)
		return 1
	}
	defer b.Close()
	by := requester()
	now := time.Now().UTC()
	for i, id := range ids.valid {
		if _, err := b.PublishRequest(ctx, tenant.Request{ID: id, RequestedBy: by, RequestedAt: now}, ""); err != nil {
			c.errorf("%v; published %d of %d requests (publishing the rest again is safe)", err, i, len(ids.valid))
			return 1
		}
	}
	fmt.Fprintf(c.Stdout, "published %d cleanup request(s) on %s\n", len(ids.valid), bus.SubjectCandidate)
	return 0
}

type validated struct {
	valid    []tenant.ID
	refusals []string
}

// validate parses every id; duplicates are published once.
func validate(raw []string) (validated, int) {
	var v validated
	seen := map[tenant.ID]bool{}
	for _, s := range raw {
		id, err := tenant.ParseID(s)
		if err != nil {
			v.refusals = append(v.refusals, "refused: "+err.Error())
			continue
		}
		if !seen[id] {
			seen[id] = true
			v.valid = append(v.valid, id)
		}
	}
	return v, len(v.refusals)
}

// readCSV returns the tenant_id column of a CSV file with a header row.
func readCSV(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1
	header, err := r.Read()
	if err != nil {
		return nil, fmt.Errorf("read %s: no header row: %w", path, err)
	}
	col := -1
	for i, h := range header {
		if h == "tenant_id" || (i == 0 && h == "\ufefftenant_id") {
			col = i
		}
	}
	if col < 0 {
		return nil, fmt.Errorf("read %s: no tenant_id column in the header %q", path, header)
	}
	var ids []string
	for line := 2; ; line++ {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return ids, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		if col >= len(rec) {
			return nil, fmt.Errorf("read %s: line %d has no tenant_id field", path, line)
		}
		ids = append(ids, rec[col])
	}
}
