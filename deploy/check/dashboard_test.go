package check

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/promql/parser"
)

// dashboard is what the checks read of a Grafana dashboard: panels (rows
// nest theirs) and their queries.
type dashboard struct {
	UID    string  `json:"uid"`
	Title  string  `json:"title"`
	Panels []panel `json:"panels"`
}

type panel struct {
	Title   string  `json:"title"`
	Type    string  `json:"type"`
	Panels  []panel `json:"panels"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

// DashboardMetrics parses every panel query of a Grafana dashboard with
// Prometheus's PromQL parser and returns the metric names they select,
// sorted, and the number of queries.
func DashboardMetrics(raw []byte) ([]string, int, error) {
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		return nil, 0, err
	}
	names := map[string]bool{}
	p := parser.NewParser(parser.Options{})
	n := 0
	var walk func(ps []panel) error
	walk = func(ps []panel) error {
		for _, pn := range ps {
			for _, tg := range pn.Targets {
				n++
				expr, err := p.ParseExpr(tg.Expr)
				if err != nil {
					return &panelError{pn.Title, err}
				}
				parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
					if vs, ok := node.(*parser.VectorSelector); ok && vs.Name != "" {
						names[vs.Name] = true
					}
					return nil
				})
			}
			if err := walk(pn.Panels); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(d.Panels); err != nil {
		return nil, n, err
	}
	out := make([]string, 0, len(names))
	for k := range names {
		out = append(out, k)
	}
	sort.Strings(out)
	return out, n, nil
}

type panelError struct {
	panel string
	err   error
}

func (e *panelError) Error() string { return "panel " + e.panel + ": " + e.err.Error() }

// TestGrafanaDashboard renders the chart with metrics.grafanaDashboard on
// and off: on, a ConfigMap with the Grafana sidecar's label carries the
// dashboard, whose every panel query parses as PromQL and selects only
// series the real gateway exports (scraped after a delivery); off (the
// default), there is none.
func TestGrafanaDashboard(t *testing.T) {
	for _, on := range []bool{false, true} {
		set := []string{}
		if on {
			set = []string{"metrics.grafanaDashboard.enabled=true", "metrics.grafanaDashboard.annotations.grafana_folder=SCIM"}
		}
		_, o := mustValidate(t, Install{Release: "scimgate", Namespace: "idp", Chart: chartDir, Set: set})
		cm := o.configMap("scimgate-dashboard")
		if !on {
			if cm != nil {
				t.Errorf("dashboard ConfigMap rendered with metrics.grafanaDashboard.enabled false")
			}
			continue
		}
		if cm == nil {
			t.Fatal("no ConfigMap scimgate-dashboard with metrics.grafanaDashboard.enabled=true")
		}
		if cm.Labels["grafana_dashboard"] != "1" || cm.Annotations["grafana_folder"] != "SCIM" {
			t.Errorf("dashboard ConfigMap labels %v, annotations %v; want grafana_dashboard: \"1\" and the folder", cm.Labels, cm.Annotations)
		}
		raw := cm.Data["scimgate.json"]
		names, queries, err := DashboardMetrics([]byte(raw))
		if err != nil {
			t.Fatalf("dashboard: %v", err)
		}
		if queries < 10 || len(names) < 10 {
			t.Fatalf("dashboard has %d queries over %d metrics; the file is not the dashboard?", queries, len(names))
		}
		for _, n := range names {
			if !strings.HasPrefix(n, "scimgate_") {
				t.Errorf("dashboard selects %s, not a gateway metric", n)
			}
		}
		have := scrapeGateway(t)
		for _, n := range names {
			if !have[n] {
				t.Errorf("dashboard selects %s, which the gateway does not export", n)
			}
		}
		t.Logf("dashboard: %d queries over %d metrics, all exported", queries, len(names))
	}
	// The parser really parses: a broken query fails.
	if _, _, err := DashboardMetrics([]byte(`{"panels":[{"title":"x","targets":[{"expr":"rate(scimgate_x[5m]"}]}]}`)); err == nil {
		t.Error("a broken query parsed")
	}
}

// scrapeGateway runs the real gateway with a webhook target, makes one
// user and waits for its delivery, and returns the metric names /metrics
// exports then.
func scrapeGateway(t *testing.T) map[string]bool {
	t.Helper()
	var delivered = make(chan struct{}, 1)
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
		select {
		case delivered <- struct{}{}:
		default:
		}
	}))
	defer rcv.Close()
	bin := gatewayBinary(t)
	scimPort, adminPort := freePort(t), freePort(t)
	const scimToken = "scim-token-for-the-dashboard-test"
	env := []string{"SCIMGATE_DATA_DIR=" + t.TempDir(), "SCIMGATE_SCIM_TOKEN=" + scimToken, "SCIMGATE_ADMIN_TOKEN=admin-token-for-the-dashboard-test",
		"SCIMGATE_WEBHOOK_URL=" + rcv.URL + "/hooks", "SCIMGATE_WEBHOOK_SECRET=" + newSecret(t),
		"SCIMGATE_LISTEN=127.0.0.1:" + scimPort, "SCIMGATE_ADMIN_LISTEN=127.0.0.1:" + adminPort}
	out := start(t, t.TempDir(), env, bin, "serve")
	waitListening(t, adminPort, out, 30*time.Second)
	waitListening(t, scimPort, out, 30*time.Second)
	req, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1:"+scimPort+"/scim/v2/Users",
		strings.NewReader(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ada@example.com"}`))
	req.Header.Set("Authorization", "Bearer "+scimToken)
	req.Header.Set("Content-Type", "application/scim+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create user: %d\n%s", resp.StatusCode, out.String())
	}
	select {
	case <-delivered:
	case <-time.After(15 * time.Second):
		t.Fatalf("no delivery in 15 s:\n%s", out.String())
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://127.0.0.1:" + adminPort + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		have := exported(resp.Body)
		resp.Body.Close()
		// The delivery is recorded once its outcome is committed.
		if have["scimgate_outbox_delivery_latency_seconds_bucket"] || time.Now().After(deadline) {
			return have
		}
		time.Sleep(100 * time.Millisecond)
	}
}
