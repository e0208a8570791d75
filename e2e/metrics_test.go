package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func httpGet(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestMetricsAndHealth(t *testing.T) {
	t.Parallel()
	bin := binaries(t)
	w := newWorld(t)
	w.DBs.CreateTenant(t, testenv.Tenant{ID: eligibleOld, Status: tenant.StatusGatedAccess, LastQuery: testenv.DaysAgo(200), Pairs: 1, DocsPerPair: 3})
	markerAddr, cleanerAddr, waitingAddr, cutAddr := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	start(t, filepath.Join(bin, "marker"), append(w.Environ(), "HTTP_ADDR="+markerAddr))
	start(t, filepath.Join(bin, "cleaner"), append(w.Environ(), "HTTP_ADDR="+cleanerAddr))
	// A service still waiting for JetStream is alive but not ready.
	start(t, filepath.Join(bin, "cleaner"), append(w.Environ(), "HTTP_ADDR="+waitingAddr, "NATS_URL=nats://"+freeAddr(t)))
	// One whose control plane goes away becomes not ready.
	proxy := testenv.StartProxy(t, "127.0.0.1:5432")
	start(t, filepath.Join(bin, "cleaner"), append(w.Environ(), "HTTP_ADDR="+cutAddr,
		"CONTROL_PLANE_DATABASE_URL="+strings.Replace(w.DBs.ControlURL, "127.0.0.1:5432", proxy.Addr, 1)))

	for _, addr := range []string{markerAddr, cleanerAddr, cutAddr} {
		testenv.Eventually(t, 20*time.Second, func() bool { code, _ := httpGet("http://" + addr + "/readyz"); return code == 200 },
			"%s ready", addr)
		if code, _ := httpGet("http://" + addr + "/healthz"); code != 200 {
			t.Errorf("%s /healthz = %d", addr, code)
		}
	}
	testenv.Eventually(t, 20*time.Second, func() bool { code, _ := httpGet("http://" + waitingAddr + "/healthz"); return code == 200 },
		"a waiting service is alive")
	if code, body := httpGet("http://" + waitingAddr + "/readyz"); code != 503 || !strings.Contains(body, "waiting") {
		t.Errorf("waiting service /readyz = %d %q; want 503 saying it is waiting", code, body)
	}
	proxy.Cut()
	testenv.Eventually(t, 20*time.Second, func() bool {
		code, body := httpGet("http://" + cutAddr + "/readyz")
		return code == 503 && strings.Contains(body, "control plane")
	}, "a cleaner without its control plane is not ready")
	proxy.Restore()

	w.DrainTenants(true, eligibleOld)
	w.SimulateDeletion()
	w.request(eligibleOld)
	w.WaitFor(eligibleOld, tenant.OutcomeCleaned, 30*time.Second)

	_, cleaner := httpGet("http://" + cleanerAddr + "/metrics")
	_, otherCleaner := httpGet("http://" + cutAddr + "/metrics")
	_, marker := httpGet("http://" + markerAddr + "/metrics")
	cleaned := `tenant_cleanup_tenants_total{component="cleaner",outcome="cleaned"} 1`
	if !strings.Contains(cleaner, cleaned) && !strings.Contains(otherCleaner, cleaned) {
		t.Errorf("no cleaner counts the cleaned tenant:\n%s", grepMetrics(cleaner))
	}
	for _, want := range []string{
		`tenant_cleanup_tenants_in_phase{component="cleaner",phase="cleaned"} 1`,
		`tenant_cleanup_tenants_in_phase{component="cleaner",phase="draining"} 0`,
		`tenant_cleanup_oldest_tenant_age_seconds{component="cleaner",phase="cleaned"}`,
		`tenant_cleanup_ready{component="cleaner"} 1`,
	} {
		if !strings.Contains(cleaner, want) {
			t.Errorf("cleaner /metrics lacks %s:\n%s", want, grepMetrics(cleaner))
		}
	}
	both := cleaner + otherCleaner
	for _, want := range []string{`tenant_cleanup_drain_checks_total{component="cleaner",result="drained"} 1`,
		`tenant_cleanup_step_duration_seconds_count{component="cleaner",step="drop_schema"} 1`} {
		if !strings.Contains(both, want) {
			t.Errorf("cleaners' /metrics lack %s:\n%s", want, grepMetrics(both))
		}
	}
	for _, want := range []string{`tenant_cleanup_tenants_total{component="marker",outcome="marked"} 1`,
		`tenant_cleanup_step_duration_seconds_count{component="marker",step="mark"} 1`} {
		if !strings.Contains(marker, want) {
			t.Errorf("marker /metrics lacks %s:\n%s", want, grepMetrics(marker))
		}
	}

	// The analyzer, running continuously (not --once), serves the same
	// endpoints. Started last, it finds nothing left to publish.
	analyzerAddr := freeAddr(t)
	start(t, filepath.Join(bin, "analyzer"), append(w.Environ(), "HTTP_ADDR="+analyzerAddr, "ANALYZER_REPORT_DIR="+t.TempDir()))
	testenv.Eventually(t, 20*time.Second, func() bool { code, _ := httpGet("http://" + analyzerAddr + "/readyz"); return code == 200 },
		"the analyzer is ready")
	if code, _ := httpGet("http://" + analyzerAddr + "/healthz"); code != 200 {
		t.Errorf("analyzer /healthz = %d", code)
	}
	if code, analyzer := httpGet("http://" + analyzerAddr + "/metrics"); code != 200 || !strings.Contains(analyzer, `tenant_cleanup_ready{component="analyzer"} 1`) {
		t.Errorf("analyzer /metrics = %d, lacks tenant_cleanup_ready{component=\"analyzer\"} 1:\n%s", code, grepMetrics(analyzer))
	}
}

func grepMetrics(exposition string) string {
	var out []string
	for _, line := range strings.Split(exposition, "\n") {
		if strings.HasPrefix(line, "tenant_cleanup_") {
			out = append(out, line)
		}
	}
	return fmt.Sprint(strings.Join(out, "\n"))
}
