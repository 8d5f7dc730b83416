package check

import (
	"net/http"
	"strings"
	"testing"
	"text/template"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
)

// external are the series the alerts use that other exporters provide:
// Prometheus's own scrape health and kube-state-metrics.
var external = map[string]bool{"up": true, "kube_pod_container_status_ready": true}

// renderedRules renders the chart with both monitoring objects enabled.
func renderedRules(t *testing.T) *Objects {
	t.Helper()
	r, err := Render(Install{Release: "scimgate", Namespace: "idp", Chart: chartDir, Set: []string{
		"metrics.serviceMonitor.enabled=true", "metrics.prometheusRule.enabled=true",
	}})
	if err != nil {
		t.Fatal(err)
	}
	o, problems, err := Validate(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Error(p)
	}
	return o
}

// TestAlertRules parses every alert with Prometheus's PromQL parser and
// its annotations as the templates Prometheus expands, and checks that
// each alert docs/operations.md recommends is there.
func TestAlertRules(t *testing.T) {
	o := renderedRules(t)
	if len(o.Rules) != 1 || len(o.ServiceMonitors) != 1 {
		t.Fatalf("rules = %d, monitors = %d, want 1 and 1", len(o.Rules), len(o.ServiceMonitors))
	}
	names, err := RuleMetrics(o.Rules)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if !strings.HasPrefix(n, "scimgate_") && !external[n] {
			t.Errorf("alerts select %s, neither the gateway's nor a known exporter's", n)
		}
	}
	// Prometheus's template functions that the annotations use.
	funcs := template.FuncMap{"humanize": fmtAny, "humanizeDuration": fmtAny}
	var alerts []string
	for _, g := range o.Rules[0].Spec.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			if !strings.Contains(r.Expr.String(), `namespace="idp"`) {
				t.Errorf("%s: %s does not select this release's namespace", r.Alert, r.Expr.String())
			}
			for k, v := range r.Annotations {
				// As Prometheus expands them: these variables defined first.
				tmpl, err := template.New(k).Funcs(funcs).Option("missingkey=error").Parse(
					"{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}" + v)
				if err != nil {
					t.Errorf("%s, annotation %s: %v", r.Alert, k, err)
					continue
				}
				var out strings.Builder
				data := map[string]any{"Labels": map[string]string{"namespace": "idp", "job": "scimgate", "target": "default", "pod": "scimgate-1"},
					"ExternalLabels": map[string]string{}, "ExternalURL": "", "Value": 1.0}
				if err := tmpl.Execute(&out, data); err != nil {
					t.Errorf("%s, annotation %s: %v", r.Alert, k, err)
				} else if strings.Contains(out.String(), "<no value>") {
					t.Errorf("%s, annotation %s expands to %q", r.Alert, k, out.String())
				}
			}
		}
	}
	for _, want := range []string{"ScimgateDown", "ScimgateNotReady", "ScimgateDeadLetters", "ScimgateDeliveryBacklogOld",
		"ScimgateTargetPaused", "ScimgateSCIMErrors", "ScimgateSCIMUnauthorized", "ScimgateSCIMSlow", "ScimgateNoSCIMRequests"} {
		if !strings.Contains(strings.Join(alerts, " "), want) {
			t.Errorf("no alert %s (docs/operations.md lists it)", want)
		}
	}
	// The parser really parses: a broken expression fails.
	broken := o.Rules[0].DeepCopy()
	broken.Spec.Groups[0].Rules[0].Expr.StrVal = "up{job=\"x\" == 0"
	if _, err := RuleMetrics([]*monitoringv1.PrometheusRule{broken}); err == nil {
		t.Errorf("a broken expression parsed")
	}
}

func fmtAny(any) string { return "" }

// checkRuleMetrics scrapes a running gateway and checks that every
// scimgate_* series an alert selects is exported (a histogram as _bucket).
func checkRuleMetrics(t *testing.T, adminPort string) {
	t.Helper()
	o := renderedRules(t)
	names, err := RuleMetrics(o.Rules)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://127.0.0.1:" + adminPort + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	have := exported(resp.Body)
	for _, n := range names {
		if external[n] {
			continue
		}
		if !have[n] {
			t.Errorf("alerts select %s, which the gateway does not export", n)
		}
	}
}
