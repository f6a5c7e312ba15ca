package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/etcd-backup/etcdbackup/e2e/sandbox"
	"sigs.k8s.io/yaml"
)

// The alerting rules of deploy/k8s/monitoring pass promtool's checks, and each alert's unit
// tests (rules_test.yaml: one case that fires it, one that does not) pass with promtool
// (Debian's, or built from the module proxy: hack/promtool.sh). Every alert has both cases,
// and every alert is in the runbook.
func TestAlertingRules(t *testing.T) {
	root, err := sandbox.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "deploy", "k8s", "monitoring")
	raw, err := os.ReadFile(filepath.Join(dir, "prometheusrule.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var rule struct {
		Spec struct {
			Groups []struct {
				Rules []struct {
					Alert string `json:"alert"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(raw, &rule); err != nil {
		t.Fatal(err)
	}
	var spec map[string]any
	if err := yaml.Unmarshal(raw, &spec); err != nil {
		t.Fatal(err)
	}
	rules, err := yaml.Marshal(spec["spec"])
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	if err := os.WriteFile(filepath.Join(work, "rules.yaml"), rules, 0o600); err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile(filepath.Join(dir, "rules_test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "rules_test.yaml"), tests, 0o600); err != nil {
		t.Fatal(err)
	}
	// The kustomization renders: the rule and the dashboard's ConfigMap for Grafana's sidecar.
	if out := mustKubectl(t, nil, "kustomize", dir); !strings.Contains(out,
		"kind: PrometheusRule") || !strings.Contains(out, "grafana_dashboard: \"1\"") {
		t.Fatalf("kubectl kustomize %s:\n%s", dir, out)
	}
	promtool := filepath.Join(sandbox.ToolDir(), "promtool")
	for _, args := range [][]string{{"check", "rules", "rules.yaml"}, {"test", "rules", "rules_test.yaml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = work
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}

	var cases struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string           `json:"alertname"`
				ExpAlerts []map[string]any `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	if err := yaml.Unmarshal(tests, &cases); err != nil {
		t.Fatal(err)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range cases.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	runbook, err := os.ReadFile(filepath.Join(root, "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range rule.Spec.Groups {
		for _, r := range g.Rules {
			n++
			if !fires[r.Alert] || !quiet[r.Alert] {
				t.Errorf("alert %s: a case that fires it: %v, one that does not: %v; want both", r.Alert, fires[r.Alert],
					quiet[r.Alert])
			}
			if !strings.Contains(string(runbook), "| `"+r.Alert+"` |") {
				t.Errorf("alert %s has no runbook line in docs/operations.md", r.Alert)
			}
		}
	}
	if n < 9 {
		t.Fatalf("%d alerts, want the nine of issue 12", n)
	}

	// The dashboard's queries parse (promtool checks them as recording rules) and use only
	// metrics the services export (each is in the metrics table).
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	board, err := os.ReadFile(filepath.Join(dir, "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(board, &dash); err != nil {
		t.Fatal(err)
	}
	var recording []map[string]string
	metric := regexp.MustCompile(`etcdbackup_[a-z_]+`)
	for _, p := range dash.Panels {
		for i, q := range p.Targets {
			recording = append(recording, map[string]string{"record": fmt.Sprintf("dashboard:panel_%d", len(recording)),
				"expr": q.Expr})
			for _, m := range metric.FindAllString(q.Expr, -1) {
				m = strings.TrimSuffix(m, "_bucket")
				if !strings.Contains(string(runbook), "`"+m+"`") {
					t.Errorf("panel %q query %d uses %s, which docs/operations.md does not list", p.Title, i, m)
				}
			}
		}
	}
	check, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": recording}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "dashboard.yaml"), check, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(promtool, "check", "rules", "dashboard.yaml")
	cmd.Dir = work
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the dashboard's queries: %v\n%s", err, out)
	}
}
