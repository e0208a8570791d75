package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats-server/v2/server"
)

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
}

type machine struct {
	Cores      int               `json:"cores"`
	CPUModel   string            `json:"cpu_model"`
	MemoryGiB  float64           `json:"memory_gib"`
	Kernel     string            `json:"kernel"`
	GoVersion  string            `json:"go_version"`
	NATS       string            `json:"nats_server"`
	Postgres   string            `json:"postgres"`
	Settings   map[string]string `json:"postgres_settings"`
	PgStatStmt string            `json:"pg_stat_statements"`
	LoadAvg    string            `json:"load_average_at_start"`
	OtherConns int               `json:"other_sessions_at_start"`
	DiskFreeGB float64           `json:"disk_free_gib"`
	// Product is the commit the binaries were built from, and how many of
	// the product's files differed from it (other engineers' work in progress).
	Product string `json:"product_version"`
}

func machineFacts(ctx context.Context, admin string) (machine, error) {
	m := machine{Cores: runtime.NumCPU(), GoVersion: runtime.Version(), NATS: "nats-server v" + server.VERSION + " (embedded)",
		Settings: map[string]string{}}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "MemTotal:") {
				kb, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
				m.MemoryGiB = kb / (1 << 20)
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.LoadAvg = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	var st syscall.Statfs_t
	if syscall.Statfs("/var/lib/postgresql", &st) == nil || syscall.Statfs("/", &st) == nil {
		m.DiskFreeGB = float64(st.Bavail) * float64(st.Bsize) / (1 << 30)
	}
	m.Product = productVersion()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return m, fmt.Errorf("connect to PostgreSQL at %s (set BENCH_DATABASE_URL): %w", admin, err)
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&m.Postgres); err != nil {
		return m, err
	}
	rows, err := conn.Query(ctx, `SELECT name, setting || coalesce(unit, '') FROM pg_settings WHERE name IN
		('max_connections', 'max_locks_per_transaction', 'max_prepared_transactions', 'shared_buffers', 'work_mem',
		 'fsync', 'synchronous_commit', 'wal_level', 'max_wal_size', 'checkpoint_timeout', 'autovacuum',
		 'shared_preload_libraries', 'effective_io_concurrency', 'random_page_cost')`)
	if err != nil {
		return m, err
	}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return m, err
		}
		m.Settings[k] = v
	}
	if err := rows.Err(); err != nil {
		return m, err
	}
	_ = conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()`).Scan(&m.OtherConns)
	m.PgStatStmt = "not usable: not in shared_preload_libraries (changing that needs a server restart); statement times come from the bench's wire-protocol proxy instead"
	if strings.Contains(m.Settings["shared_preload_libraries"], "pg_stat_statements") {
		m.PgStatStmt = "preloaded"
	}
	return m, nil
}

// productVersion is the git commit of the working tree and the number of
// product files changed since (read-only git commands).
func productVersion() string {
	head, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown (not a git checkout)"
	}
	v := "commit " + strings.TrimSpace(string(head))
	if st, err := exec.Command("git", "status", "--porcelain", "--", "pkg", "services", "cmd/tenantctl", "internal").Output(); err == nil {
		if out := strings.TrimSpace(string(st)); out != "" {
			n := strings.Count(out, "\n") + 1
			v += fmt.Sprintf(" + uncommitted changes in %d product files", n)
		}
	}
	return v
}

func printMachine(m machine) {
	step("machine")
	info("%d cores (%s), %.0f GiB, Linux %s, %s, %s", m.Cores, m.CPUModel, m.MemoryGiB, m.Kernel, m.GoVersion, m.NATS)
	info("%s", m.Postgres)
	var s []string
	for _, k := range sortedKeys(m.Settings) {
		s = append(s, k+"="+m.Settings[k])
	}
	info("settings: %s", strings.Join(s, " "))
	info("product: %s", m.Product)
	info("load average %s, %d other client sessions on the server, %.0f GiB free disk", m.LoadAvg, m.OtherConns, m.DiskFreeGB)
}

// cpuSample is the machine's CPU counters and this process's CPU time.
type cpuSample struct {
	busy, total float64 // jiffies
	self        time.Duration
}

// cpuUse is what a run used, in CPU seconds: the whole machine, this process
// (embedded JetStream, the floor's sessions, the event subscriber, the
// profiling proxies), the service processes, the PostgreSQL backends of the
// run's own databases, and the rest (PostgreSQL's background processes,
// the kernel, and anything else running on the machine meanwhile).
type cpuUse struct {
	BusyPercent     float64            `json:"machine_busy_percent"`
	MachineSeconds  float64            `json:"machine_busy_cpu_seconds"`
	BenchSeconds    float64            `json:"bench_process_cpu_seconds"`
	ServiceSeconds  map[string]float64 `json:"service_cpu_seconds,omitempty"`
	PostgresSeconds float64            `json:"postgres_backends_cpu_seconds"`
	// PostgresOtherSeconds is every other PostgreSQL process: background
	// processes (checkpointer, WAL writer, …) and other clients' sessions.
	PostgresOtherSeconds float64 `json:"postgres_other_cpu_seconds"`
	OtherSeconds         float64 `json:"other_cpu_seconds"`
}

func sampleCPU() cpuSample {
	var s cpuSample
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line := strings.SplitN(string(b), "\n", 2)[0]
		f := strings.Fields(line)
		for i, v := range f[1:] {
			x, _ := strconv.ParseFloat(v, 64)
			s.total += x
			if i != 3 && i != 4 { // idle, iowait
				s.busy += x
			}
		}
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return s
}

// clockTicks is USER_HZ, the unit of /proc/stat and /proc/<pid>/stat.
const clockTicks = 100

// since is the CPU use between s0 and s; services and backends are added
// by the caller.
func (s cpuSample) since(s0 cpuSample) cpuUse {
	u := cpuUse{BenchSeconds: (s.self - s0.self).Seconds(), MachineSeconds: (s.busy - s0.busy) / clockTicks}
	if s.total > s0.total {
		u.BusyPercent = 100 * (s.busy - s0.busy) / (s.total - s0.total)
	}
	u.OtherSeconds = u.MachineSeconds - u.BenchSeconds
	return u
}

func (u *cpuUse) addService(name string, d time.Duration) {
	if u.ServiceSeconds == nil {
		u.ServiceSeconds = map[string]float64{}
	}
	u.ServiceSeconds[name] += d.Seconds()
	u.OtherSeconds -= d.Seconds()
}

// addPostgres adds the CPU of the run's own backends and of all PostgreSQL
// processes (pgAll: postgresCPU at the end minus at the start).
func (u *cpuUse) addPostgres(ours, pgAll float64) {
	u.PostgresSeconds += ours
	u.PostgresOtherSeconds += max(pgAll-ours, 0)
	u.OtherSeconds -= ours + max(pgAll-ours, 0)
}

// postgresCPU is the CPU seconds used so far by every process named
// postgres on this machine (those that exited meanwhile are not counted).
func postgresCPU() map[int]float64 {
	out := map[int]float64{}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil || strings.TrimSpace(string(comm)) != "postgres" {
			continue
		}
		if s, ok := processCPU(pid); ok {
			out[pid] = s
		}
	}
	return out
}

// backendCPU is the CPU seconds used so far by each PostgreSQL backend
// connected to the given databases (read from /proc/<pid>/stat: the bench
// runs on the database's machine).
func (b *bench) backendCPU(ctx context.Context, dbs ...string) map[int]float64 {
	out := map[int]float64{}
	conn, err := pgx.Connect(ctx, b.o.admin)
	if err != nil {
		return out
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, "SELECT pid FROM pg_stat_activity WHERE datname = ANY($1)", dbs)
	if err != nil {
		return out
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return out
	}
	for _, pid := range pids {
		if s, ok := processCPU(int(pid)); ok {
			out[int(pid)] = s
		}
	}
	return out
}

// backendCPUSince is the CPU the backends used since before (a backend not
// seen before started during the run, at zero).
func backendCPUSince(before, after map[int]float64) float64 {
	total := 0.0
	for pid, s := range after {
		total += s - before[pid]
	}
	return total
}

func processCPU(pid int) (float64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, false
	}
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / clockTicks, true
}
