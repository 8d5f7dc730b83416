package check

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// repo is the repository's root, seen from this module.
var repo = func() string {
	abs, err := filepath.Abs("../..")
	if err != nil {
		panic(err)
	}
	return abs
}()

var (
	chartDir      = filepath.Join(repo, "deploy/helm/scimgate")
	sidecarValues = filepath.Join(chartDir, "examples/sidecar.yaml")
)

// mustValidate renders, decodes and checks; any problem fails the test.
func mustValidate(t *testing.T, in Install) (*Rendering, *Objects) {
	t.Helper()
	r, err := Render(in)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	o, problems, err := Validate(r)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	for _, p := range problems {
		t.Error(p)
	}
	return r, o
}

// kinds lists the rendered objects as Kind/name, sorted.
func kinds(r *Rendering) []string {
	var out []string
	for _, m := range r.Manifests {
		out = append(out, m.Kind+"/"+m.Name)
	}
	slices.Sort(out)
	return out
}

// TestChartDefaults renders the chart with its defaults (standalone mode):
// every object decodes strictly, fits together, and the whole pod passes the
// restricted Pod Security Standard.
func TestChartDefaults(t *testing.T) {
	r, o := mustValidate(t, Install{Release: "scimgate", Namespace: "idp", Chart: chartDir})
	if got, want := kinds(r), []string{
		"ConfigMap/scimgate", "Deployment/scimgate", "PersistentVolumeClaim/scimgate",
		"Service/scimgate", "ServiceAccount/scimgate",
	}; !slices.Equal(got, want) {
		t.Errorf("objects = %v, want %v", got, want)
	}
	pod := &o.Deployments[0].Spec.Template.Spec
	if got := Restricted(pod); len(got) != 0 {
		t.Errorf("standalone pod is not restricted: %v", got)
	}
	if got, want := len(pod.Containers), 1; got != want {
		t.Errorf("containers = %d, want %d", got, want)
	}
	// No secrets given: no Secret, no _FILE variable (the gateway generates
	// and prints its tokens), and the config is the repository's example.
	for _, e := range ScimgateContainer(o.Deployments[0]).Env {
		if strings.HasSuffix(e.Name, "_FILE") {
			t.Errorf("%s set without a Secret", e.Name)
		}
	}
	example, err := os.ReadFile(filepath.Join(repo, "config.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// Helm trims each manifest's end, so the block scalar loses the final newline.
	if got := o.ConfigMaps[0].Data["config.yaml"]; got != strings.TrimSuffix(string(example), "\n") {
		t.Errorf("the default ConfigMap (%d bytes) is not config.example.yaml (%d bytes): copy it to deploy/helm/scimgate/files/config.yaml again", len(got), len(example))
	}
	if o.Claims[0].Annotations["helm.sh/resource-policy"] != "keep" {
		t.Errorf("the data claim is deleted with the release")
	}
	if !strings.Contains(r.Notes, "http://scimgate.idp.svc:8080/scim/v2") {
		t.Errorf("NOTES.txt lacks the SCIM URL:\n%s", r.Notes)
	}
}

// TestChartSidecar renders the sidecar example: scimgate beside a root-based
// app in one pod, restricted on its own container only.
func TestChartSidecar(t *testing.T) {
	r, o := mustValidate(t, Install{Release: "legacy-app", Namespace: "apps", Chart: chartDir, ValueFiles: []string{sidecarValues}})
	if got, want := kinds(r), []string{
		"ConfigMap/legacy-app", "Deployment/legacy-app", "Ingress/legacy-app", "PersistentVolumeClaim/legacy-app",
		"PrometheusRule/legacy-app", "Service/legacy-app", "ServiceAccount/legacy-app", "ServiceMonitor/legacy-app",
	}; !slices.Equal(got, want) {
		t.Errorf("objects = %v, want %v", got, want)
	}
	d := o.Deployments[0]
	pod := &d.Spec.Template.Spec
	var names []string
	for _, c := range pod.Containers {
		names = append(names, c.Name)
	}
	if got, want := names, []string{"scimgate", "app"}; !slices.Equal(got, want) {
		t.Errorf("containers = %v, want %v", got, want)
	}
	// The app has no security context of its own: the full pod is not
	// restricted, and that must be the app's doing only.
	if got := Restricted(pod); len(got) == 0 {
		t.Errorf("the root-based app passes restricted: the example no longer shows what it is meant to")
	}
	if got := Restricted(OnlyScimgate(pod)); len(got) != 0 {
		t.Errorf("scimgate container is not restricted: %v", got)
	}
	env := map[string]string{}
	for _, e := range ScimgateContainer(d).Env {
		env[e.Name] = e.Value
	}
	for name, want := range map[string]string{
		"SCIMGATE_WEBHOOK_URL":         "http://127.0.0.1:3000/scim-events",
		"SCIMGATE_SCIM_TOKEN_FILE":     "/run/secrets/scimgate/scim-token",
		"SCIMGATE_ADMIN_TOKEN_FILE":    "/run/secrets/scimgate/admin-token",
		"SCIMGATE_WEBHOOK_SECRET_FILE": "/run/secrets/scimgate/webhook-secret",
	} {
		if got := env[name]; got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	if _, ok := env["SCIMGATE_API_TOKEN_FILE"]; ok {
		t.Errorf("SCIMGATE_API_TOKEN_FILE set for a key the Secret does not list")
	}
	if len(o.Secrets) != 0 {
		t.Errorf("an existing Secret was named, yet the chart rendered %d", len(o.Secrets))
	}
	var secretVol *corev1.Volume
	for i, v := range pod.Volumes {
		if v.Secret != nil {
			secretVol = &pod.Volumes[i]
		}
	}
	if secretVol == nil || secretVol.Secret.SecretName != "legacy-app-scimgate" {
		t.Errorf("secret volume = %+v, want Secret legacy-app-scimgate", secretVol)
	}
	if got := len(o.Rules[0].Spec.Groups[0].Rules); got < 8 {
		t.Errorf("PrometheusRule has %d rules, want the 8+ alerts docs/operations.md lists", got)
	}
}

// TestChartCreatedSecret gives the secrets as values (--set-file): the chart
// renders a Secret with exactly those keys, trimmed, and one _FILE variable each.
func TestChartCreatedSecret(t *testing.T) {
	_, o := mustValidate(t, Install{Release: "scimgate", Chart: chartDir, SetFile: map[string]string{
		"secrets.scimToken":     "tok-scim\n",
		"secrets.webhookSecret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n",
	}})
	if len(o.Secrets) != 1 {
		t.Fatalf("secrets = %d, want 1", len(o.Secrets))
	}
	s := o.Secrets[0]
	if got, want := s.StringData, map[string]string{"scim-token": "tok-scim", "webhook-secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}; !equalMaps(got, want) {
		t.Errorf("stringData = %q, want %q", got, want)
	}
	var files []string
	for _, e := range ScimgateContainer(o.Deployments[0]).Env {
		if strings.HasSuffix(e.Name, "_FILE") {
			files = append(files, e.Name+"="+e.Value)
		}
	}
	if got, want := files, []string{"SCIMGATE_SCIM_TOKEN_FILE=/run/secrets/scimgate/scim-token", "SCIMGATE_WEBHOOK_SECRET_FILE=/run/secrets/scimgate/webhook-secret"}; !slices.Equal(got, want) {
		t.Errorf("_FILE variables = %v, want %v", got, want)
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestChartSchemaRefusesBadValues: values.schema.json stops a typo or a
// value the gateway cannot work with before anything renders.
func TestChartSchemaRefusesBadValues(t *testing.T) {
	for _, set := range []string{
		"replicaCount=2",                       // no such value: one replica per database
		"persistence.accessMode=ReadWriteMany", // bbolt's lock does not hold across nodes
		"secrets.existingSecretKeys={scim-token,admin-tokn}",
		"image.pullPolicy=Sometimes",
		"webhookURL=ftp://app/hooks",
		"service.scimPort=0",
	} {
		t.Run(set, func(t *testing.T) {
			_, err := Render(Install{Release: "scimgate", Chart: chartDir, Set: []string{set}})
			if err == nil || !strings.Contains(err.Error(), "schema") {
				t.Errorf("--set %s: err = %v, want a schema error", set, err)
			}
		})
	}
}

// TestValidatorCatchesBreakage breaks one rendered field at a time and
// expects the validator to say so: the checks above can fail.
func TestValidatorCatchesBreakage(t *testing.T) {
	base, err := Render(Install{Release: "legacy-app", Namespace: "apps", Chart: chartDir, ValueFiles: []string{sidecarValues}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, kind, old, new, want string
	}{
		{"unknown field", "Deployment", "readOnlyRootFilesystem: true", "readOnlyRootFilesystm: true", `unknown field "spec.template.spec.containers[0].securityContext.readOnlyRootFilesystm"`},
		{"field case", "Deployment", "runAsNonRoot: true", "runasnonroot: true", `unknown field`},
		{"duplicate field", "Deployment", "runAsNonRoot: true", "runAsNonRoot: true\n            runAsNonRoot: false", `already set`},
		{"wrong type", "Service", "port: 8080", "port: eighty", `cannot unmarshal`},
		{"capabilities kept", "Deployment", "- ALL", "- NET_RAW", "capabilities must drop ALL"},
		{"root filesystem writable", "Deployment", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", "readOnlyRootFilesystem must be true"},
		{"escalation", "Deployment", "allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true", "allowPrivilegeEscalation"},
		{"seccomp", "Deployment", "type: RuntimeDefault", "type: Unconfined", "seccompProfile"},
		{"root user", "Deployment", "runAsUser: 65532", "runAsUser: 0", "runAsUser"},
		{"pod-level runAsNonRoot", "Deployment", "fsGroup: 65532", "fsGroup: 65532\n        runAsNonRoot: true", "pod's securityContext"},
		{"readiness path", "Deployment", "path: /readyz", "path: /healthz", `readinessProbe checks "/healthz"`},
		{"probe port", "Deployment", "{path: /healthz, port: admin}", "{path: /healthz, port: scim}", "not the admin listener"},
		{"admin on loopback", "Deployment", `value: ":8081"`, `value: "127.0.0.1:8081"`, "not reachable"},
		{"no memory limit", "Deployment", "limits:\n              memory: 256Mi", "limits: {}", "limits needs memory"},
		{"two replicas", "Deployment", "replicas: 1", "replicas: 2", "replicas must be 1"},
		{"rolling update", "Deployment", "type: Recreate", "type: RollingUpdate", "strategy must be Recreate"},
		{"secret in env", "Deployment", "- {name: SCIMGATE_WEBHOOK_URL", "- {name: SCIMGATE_SCIM_TOKEN, value: hunter2}\n            - {name: SCIMGATE_WEBHOOK_URL", "literal value"},
		{"service selector", "Service", "app.kubernetes.io/instance: legacy-app\n  ports", "app.kubernetes.io/instance: other\n  ports", "does not select the pod"},
		{"monitor port", "ServiceMonitor", "port: admin", "port: metrics", `endpoint port "metrics"`},
		{"monitor unknown field", "ServiceMonitor", "interval: 30s", "intervall: 30s", "unknown field"},
		{"rule unknown field", "PrometheusRule", "for: 5m", "forr: 5m", "unknown field"},
		{"rule without runbook", "PrometheusRule", "runbook: ", "note: ", "has no runbook annotation"},
		{"ingress port", "Ingress", "port: {name: scim}", "port: {name: admin}", "not the scim port"},
		{"bad label", "ConfigMap", "app.kubernetes.io/component: scim-gateway", "app.kubernetes.io/component: scim gateway", "metadata.labels"},
		{"unknown kind", "ServiceAccount", "kind: ServiceAccount", "kind: ServiceAcount", "no kind"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &Rendering{Values: base.Values}
			changed := false
			for _, m := range base.Manifests {
				if m.Kind == tc.kind && !changed && bytes.Contains(m.YAML, []byte(tc.old)) {
					m.YAML = bytes.Replace(m.YAML, []byte(tc.old), []byte(tc.new), 1)
					changed = true
				}
				r.Manifests = append(r.Manifests, m)
			}
			if !changed {
				t.Fatalf("no %s contains %q: the breakage no longer applies", tc.kind, tc.old)
			}
			_, problems, err := Validate(r)
			all := strings.Join(problems, "\n")
			if err != nil {
				all += "\n" + err.Error()
			}
			if !strings.Contains(all, tc.want) {
				t.Errorf("want %q among:\n%s", tc.want, all)
			}
		})
	}
}

// TestConfigsValidate runs the real binary's `scimgate validate` on the
// config each rendering mounts, so a ConfigMap the gateway would refuse
// fails here and not at a pod's start.
func TestConfigsValidate(t *testing.T) {
	bin := gatewayBinary(t)
	for _, in := range []Install{
		{Release: "scimgate", Chart: chartDir},
		{Release: "legacy-app", Chart: chartDir, ValueFiles: []string{sidecarValues}},
	} {
		r, err := Render(in)
		if err != nil {
			t.Fatal(err)
		}
		o, err := Decode(r)
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(t.TempDir(), "config.yaml")
		if err := os.WriteFile(file, []byte(o.ConfigMaps[0].Data["config.yaml"]), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "validate", "--config", file)
		cmd.Env = append(os.Environ(), "SCIMGATE_WEBHOOK_URL=http://127.0.0.1:3000/scim-events", "SCIMGATE_DATA_DIR="+t.TempDir())
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("%s: scimgate validate: %v\n%s", in.Release, err, out)
		}
	}
}

// TestChartVariants renders the branches the defaults and the sidecar
// example do not take; each must validate as they do.
func TestChartVariants(t *testing.T) {
	for _, tc := range []struct {
		set   []string
		check func(t *testing.T, o *Objects)
	}{
		{[]string{"persistence.enabled=false"}, func(t *testing.T, o *Objects) {
			if len(o.Claims) != 0 || o.Deployments[0].Spec.Template.Spec.Volumes[0].EmptyDir == nil {
				t.Errorf("no persistence: want an emptyDir and no claim")
			}
		}},
		{[]string{"persistence.existingClaim=scimgate-data-old"}, func(t *testing.T, o *Objects) {
			if len(o.Claims) != 0 || o.Deployments[0].Spec.Template.Spec.Volumes[0].PersistentVolumeClaim.ClaimName != "scimgate-data-old" {
				t.Errorf("existing claim not used")
			}
		}},
		{[]string{"persistence.storageClass=-", "persistence.accessMode=ReadWriteOncePod", "persistence.keep=false"}, func(t *testing.T, o *Objects) {
			c := o.Claims[0]
			if c.Spec.StorageClassName == nil || *c.Spec.StorageClassName != "" || c.Spec.AccessModes[0] != "ReadWriteOncePod" || c.Annotations["helm.sh/resource-policy"] != "" {
				t.Errorf("claim = %+v", c.Spec)
			}
		}},
		{[]string{"image.digest=sha256:" + strings.Repeat("ab", 32)}, func(t *testing.T, o *Objects) {
			if got := ScimgateContainer(o.Deployments[0]).Image; got != "scimgate@sha256:"+strings.Repeat("ab", 32) {
				t.Errorf("image = %s", got)
			}
		}},
		{[]string{"serviceAccount.create=false", "ingress.enabled=true"}, func(t *testing.T, o *Objects) {
			if len(o.ServiceAccounts) != 0 || o.Deployments[0].Spec.Template.Spec.ServiceAccountName != "default" || len(o.Ingresses[0].Spec.TLS) != 0 {
				t.Errorf("service account or ingress wrong")
			}
		}},
		{[]string{"secrets.apiToken=tok-api", "secrets.adminToken=tok-admin", "fullnameOverride=gw"}, func(t *testing.T, o *Objects) {
			if o.Secrets[0].Name != "gw" || len(o.Secrets[0].StringData) != 2 || o.Deployments[0].Name != "gw" {
				t.Errorf("secret = %+v", o.Secrets[0])
			}
		}},
	} {
		t.Run(strings.Join(tc.set, ","), func(t *testing.T) {
			_, o := mustValidate(t, Install{Release: "scimgate", Chart: chartDir, Set: tc.set})
			if !t.Failed() {
				tc.check(t, o)
			}
		})
	}
}
