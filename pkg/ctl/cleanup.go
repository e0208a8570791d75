package ctl

import (
	"bufio"
	"context"
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
	"github.com/tenantcleanup/tenant-cleanup/pkg/config"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

const cleanupHelp = `
Validates every tenant id first (tenant_<lower-case uuid>, tenant_i-<hex> or
tenant_dev); if one is invalid it says why, publishes nothing and exits 1.
Otherwise it publishes one request per tenant (duplicates once) on
` + bus.SubjectCandidate + `, requested by tenantctl:$USER@host, and the tenant
is recorded as "requested". The marker and the cleaner then check and clean each one
exactly as they do the analyzer's candidates: a tenant that is not eligible is
refused.

A tenant whose schema is gone but whose rows remain is completed by the
pipeline only with evidence that its cleanup began. When
DATA_PLANE_DATABASE_URL is set, cleanup looks each tenant up first; for such a
tenant without evidence (its schema may have been renamed, be restored, or
live on another shard) it says what completing it deletes and asks; --force
confirms without asking. The confirmation is recorded on the data plane
(tenant_cleanup.progress), where the pipeline looks for it. Without a terminal
and without --force, nothing is published.

--wait follows the requests to their end: a progress bar (one line redrawn on
a terminal; otherwise one line per tenant as it finishes) until every tenant is
cleaned, refused, stuck, held or dead, then a table of each tenant's outcome
and reason. Marked, draining, capped and paused are progress. Draining waits
for Onyx to delete the documents, which can take hours: --timeout bounds the
wait (0 = forever). Interrupting the wait (Ctrl-C) leaves the requests
published and the pipeline working on them.

Exit status: 0 published (with --wait: every tenant cleaned); 1 an invalid id
(nothing published), NATS failed, or with --wait a tenant ended otherwise than
cleaned or the timeout passed (the unfinished are listed); 2 no ids or bad
flags or configuration; 130 interrupted.`

// publishers bounds the requests published at once.
const publishers = 16

// runCleanup validates every requested id first and publishes only when all
// are valid: an invalid request is refused with its reason, the exit status
// is 1 and nothing is published.
func runCleanup(ctx context.Context, c *CLI, cmd *command, args []string) int {
	var (
		spec    cleanupSpec
		csvPath string
		wait    bool
		force   bool
		timeout time.Duration
	)
	raw, code, ok := c.parse(cmd, args, &spec, func(fs *flag.FlagSet) {
		fs.StringVar(&csvPath, "csv", "", "read tenant ids from the tenant_id column of this CSV `FILE`")
		fs.BoolVar(&wait, "wait", false, "follow the requests until each tenant is cleaned, refused, stuck, held or dead")
		fs.DurationVar(&timeout, "timeout", 0, "with --wait: give up after this long, listing the unfinished (0 = wait forever)")
		fs.BoolVar(&force, "force", false, "confirm without asking the completion of tenants whose schema is gone")
	})
	if !ok {
		return code
	}
	if timeout < 0 || (timeout > 0 && !wait) {
		return c.usageError(cmd, "--timeout must be positive and goes with --wait")
	}
	if csvPath != "" {
		ids, err := readCSV(csvPath)
		if err != nil {
			c.errorf("%v; nothing was published", err)
			return exitFailed
		}
		raw = append(raw, ids...)
	}
	if len(raw) == 0 {
		return c.usageError(cmd, "no tenant ids given: tenantctl cleanup TENANT_ID… or tenantctl cleanup --csv FILE")
	}
	ids, invalid := validate(raw)
	if invalid > 0 {
		for _, line := range ids.refusals {
			c.errorf("%s", line)
		}
		c.errorf("refused %d of %d requests; nothing was published. Fix or remove them and run again.", invalid, len(raw))
		return exitFailed
	}
	if !c.loadEnv(cmd, &spec) {
		return exitUsage
	}
	if spec.DataPlaneURL != "" {
		if code := c.confirmCompletions(ctx, spec.DataPlaneURL, ids.valid, force); code != exitOK {
			return code
		}
	}
	b, err := connectBus(ctx, spec.NATS)
	if err != nil {
		c.errorf("%v; nothing was published", err)
		return exitFailed
	}
	defer b.Close()
	var events *follower
	if wait {
		// Follow from before publishing, so that no outcome is missed.
		if events, err = follow(ctx, b); err != nil {
			c.errorf("%v; nothing was published", err)
			return exitFailed
		}
		defer events.stop()
	}
	published, err := publish(ctx, b, ids.valid, requester())
	if err != nil {
		c.errorf("%v; published %d of %d requests (publishing them all again is safe)", err, published, len(ids.valid))
		if ctx.Err() != nil {
			return exitInterrupted
		}
		return exitFailed
	}
	fmt.Fprintf(c.Stdout, "published %d cleanup request(s) on %s\n", len(ids.valid), bus.SubjectCandidate)
	if !wait {
		return exitOK
	}
	return c.waitFor(ctx, events, ids.valid, timeout)
}

// confirmCompletions looks up each tenant on the data plane; for a tenant
// whose schema is gone, whose rows remain and whose cleanup has no evidence,
// it says what completing it deletes, asks (or takes --force), and records
// the confirmation. It publishes nothing; a tenant not confirmed stops the
// command before anything is published.
func (c *CLI) confirmCompletions(ctx context.Context, dataURL string, ids []tenant.ID, force bool) int {
	data, closeData, err := openData(ctx, config.DataPlane{DataPlaneURL: dataURL}, 2)
	if err != nil {
		c.errorf("%v; nothing was published", err)
		return exitFailed
	}
	defer closeData()
	var todo []tenant.ID
	for _, id := range ids {
		fp, err := data.Footprint(ctx, id)
		if err != nil {
			c.errorf("%v; nothing was published", err)
			return exitFailed
		}
		if fp.SchemaExists || fp.PublicRows == 0 || fp.Record.Evidence(time.Now()) != "" {
			continue
		}
		fmt.Fprintf(c.Stdout, "%s: its schema is not on the data plane, and nothing shows that a cleanup of it began.\n"+
			"  Completing it deletes its %d public rows and, if it is GATED_ACCESS and inactive, its control-plane rows.\n"+
			"  If its schema was renamed, is being restored or lives on another shard, do not complete it.\n",
			id, fp.PublicRows)
		todo = append(todo, id)
	}
	if len(todo) == 0 {
		return exitOK
	}
	if !force {
		if !c.stdinTerminal() {
			c.errorf("%d tenant(s) need your confirmation and this is not a terminal: run again with --force to confirm; nothing was published", len(todo))
			return exitFailed
		}
		fmt.Fprintf(c.Stdout, "Complete the cleanup of %d tenant(s) whose schema is gone? [y/N] ", len(todo))
		answer, _ := bufio.NewReader(c.stdin()).ReadString('\n')
		if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
			c.errorf("not confirmed; nothing was published")
			return exitFailed
		}
	}
	if _, err := data.Ensure(ctx, false); err != nil {
		c.errorf("%v; nothing was published", err)
		return exitFailed
	}
	for _, id := range todo {
		if err := data.ConfirmCompletion(ctx, id, requester()); err != nil {
			c.errorf("%v; nothing was published", err)
			return exitFailed
		}
	}
	fmt.Fprintf(c.Stdout, "recorded your confirmation for %d tenant(s)\n", len(todo))
	return exitOK
}

// publish publishes a request for each tenant (which records it as
// requested), a few at a time; it stops at the first error and returns how
// many were published.
func publish(ctx context.Context, b *bus.Bus, ids []tenant.ID, by string) (int, error) {
	var (
		mu        sync.Mutex
		published int
		firstErr  error
		wg        sync.WaitGroup
		next      = make(chan tenant.ID)
	)
	now := time.Now().UTC()
	for range min(publishers, len(ids)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range next {
				err := b.PublishRequest(ctx, tenant.Request{ID: id, RequestedBy: by, RequestedAt: now})
				mu.Lock()
				if err == nil {
					published++
				} else if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		}()
	}
	for _, id := range ids {
		mu.Lock()
		stop := firstErr != nil
		mu.Unlock()
		if stop || ctx.Err() != nil {
			break
		}
		next <- id
	}
	close(next)
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	return published, firstErr
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
