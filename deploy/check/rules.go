package check

import (
	"fmt"
	"sort"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/prometheus/promql/parser"
)

// RuleMetrics parses every rule's expression with Prometheus's own PromQL
// parser and returns the metric names the rules select, sorted.
func RuleMetrics(rules []*monitoringv1.PrometheusRule) ([]string, error) {
	names := map[string]bool{}
	p := parser.NewParser(parser.Options{})
	for _, r := range rules {
		for _, g := range r.Spec.Groups {
			for _, rule := range g.Rules {
				expr, err := p.ParseExpr(rule.Expr.String())
				if err != nil {
					return nil, fmt.Errorf("PrometheusRule %s, %s: %w", r.Name, rule.Alert, err)
				}
				parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
					if vs, ok := n.(*parser.VectorSelector); ok && vs.Name != "" {
						names[vs.Name] = true
					}
					return nil
				})
			}
		}
	}
	out := make([]string, 0, len(names))
	for n := range names {
		out = append(out, n)
	}
	sort.Strings(out)
	return out, nil
}
