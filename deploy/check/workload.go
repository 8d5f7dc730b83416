package check

import (
	"fmt"
	"net"
	"path"
	"regexp"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	psa "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
)

// Container is the name of scimgate's container in every rendering.
const Container = "scimgate"

// nonroot is distroless's nonroot uid and gid.
const nonroot = 65532

var evaluator = func() policy.Evaluator {
	e, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		panic(err)
	}
	return e
}()

// Restricted evaluates a pod spec against the restricted Pod Security
// Standard with the admission controller's own checks, and returns what
// it forbids (nothing: the pod is admitted in a restricted namespace).
func Restricted(spec *corev1.PodSpec) []string {
	var out []string
	// Metadata matters only to the AppArmor check, through annotations the
	// chart does not set.
	for _, r := range evaluator.EvaluatePod(psa.LevelVersion{Level: psa.LevelRestricted, Version: psa.LatestVersion()}, &metav1.ObjectMeta{}, spec) {
		if !r.Allowed {
			out = append(out, r.ForbiddenReason+": "+r.ForbiddenDetail)
		}
	}
	return out
}

// OnlyScimgate is the pod spec with scimgate's container alone (no app
// containers, no init containers): what must pass the restricted standard
// in every mode.
func OnlyScimgate(spec *corev1.PodSpec) *corev1.PodSpec {
	s := spec.DeepCopy()
	s.InitContainers = nil
	s.Containers = slices.DeleteFunc(s.Containers, func(c corev1.Container) bool { return c.Name != Container })
	return s
}

// ScimgateContainer returns the scimgate container of a Deployment.
func ScimgateContainer(d *appsv1.Deployment) *corev1.Container {
	for i := range d.Spec.Template.Spec.Containers {
		if d.Spec.Template.Spec.Containers[i].Name == Container {
			return &d.Spec.Template.Spec.Containers[i]
		}
	}
	return nil
}

// secretVar is an environment variable that would carry a secret's value.
var secretVar = regexp.MustCompile(`^SCIMGATE_(SCIM_TOKEN|ADMIN_TOKEN|WEBHOOK_SECRET|API_TOKEN)$`)

// fileVars maps each _FILE variable to the Secret key the chart mounts for it.
var fileVars = map[string]string{
	"SCIMGATE_SCIM_TOKEN_FILE":     "scim-token",
	"SCIMGATE_ADMIN_TOKEN_FILE":    "admin-token",
	"SCIMGATE_WEBHOOK_SECRET_FILE": "webhook-secret",
	"SCIMGATE_API_TOKEN_FILE":      "api-token",
}

// Problems checks what the API types cannot: that the objects fit together
// (selectors, ports, volumes, claims, config and secret mounts) and that
// scimgate's container is deployed as the gateway needs (one replica,
// Recreate, restricted security, probes on the admin listener, secrets as
// files, resources). Each problem names the object and what is wrong.
func (o *Objects) Problems() []string {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }
	if len(o.Deployments) != 1 {
		add("want exactly one Deployment, got %d", len(o.Deployments))
		return p
	}
	d := o.Deployments[0]
	where := "Deployment " + d.Name
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 {
		add("%s: replicas must be 1 (one process per bbolt file)", where)
	}
	if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		add("%s: strategy must be Recreate (the old pod must release the database first), got %q", where, d.Spec.Strategy.Type)
	}
	pod := &d.Spec.Template.Spec
	sel, err := metav1LabelSelector(d)
	if err != nil {
		add("%s: selector: %v", where, err)
	} else if !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		add("%s: selector %s does not match the pod template's labels", where, sel)
	}
	if sc := pod.SecurityContext; sc != nil && (sc.RunAsNonRoot != nil || sc.RunAsUser != nil) {
		add("%s: the pod's securityContext sets runAsNonRoot/runAsUser, which would also bind an app container beside scimgate; set them on the scimgate container", where)
	}
	c := ScimgateContainer(d)
	if c == nil {
		add("%s: no container named %q", where, Container)
		return p
	}
	where += ", container " + Container
	for _, r := range Restricted(OnlyScimgate(pod)) {
		add("%s: restricted Pod Security Standard: %s", where, r)
	}
	sc := c.SecurityContext
	if sc == nil {
		add("%s: no securityContext", where)
	} else {
		if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
			add("%s: runAsNonRoot must be true", where)
		}
		if sc.RunAsUser == nil || *sc.RunAsUser != nonroot {
			add("%s: runAsUser must be %d (distroless nonroot)", where, nonroot)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			add("%s: readOnlyRootFilesystem must be true", where)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			add("%s: allowPrivilegeEscalation must be false", where)
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
			add("%s: capabilities must drop ALL and add none", where)
		}
		if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			add("%s: seccompProfile must be RuntimeDefault", where)
		}
	}
	if c.Image == "" {
		add("%s: no image", where)
	}

	ports := map[string]int32{}
	for _, cp := range c.Ports {
		ports[cp.Name] = cp.ContainerPort
	}
	env := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom != nil && secretVar.MatchString(e.Name) {
			add("%s: %s comes from the environment; mount the Secret and use %s_FILE", where, e.Name, e.Name)
		} else if secretVar.MatchString(e.Name) {
			add("%s: %s has a literal value: a secret in the pod spec", where, e.Name)
		}
		env[e.Name] = e.Value
	}
	for _, l := range []struct{ env, port string }{{"SCIMGATE_LISTEN", "scim"}, {"SCIMGATE_ADMIN_LISTEN", "admin"}} {
		host, port, err := net.SplitHostPort(env[l.env])
		switch {
		case err != nil:
			add("%s: %s=%q is not host:port", where, l.env, env[l.env])
		case ports[l.port] == 0:
			add("%s: no container port named %q", where, l.port)
		case port != fmt.Sprint(ports[l.port]):
			add("%s: %s listens on %s but container port %q is %d", where, l.env, port, l.port, ports[l.port])
		case host != "" && host != "0.0.0.0" && host != "::":
			add("%s: %s=%s is not reachable by the kubelet's probes or Prometheus; listen on all interfaces", where, l.env, env[l.env])
		}
	}
	checkProbe := func(name string, pr *corev1.Probe, want string) {
		switch {
		case pr == nil:
			add("%s: no %s", where, name)
		case pr.HTTPGet == nil:
			add("%s: %s is not an HTTP GET", where, name)
		case pr.HTTPGet.Path != want:
			add("%s: %s checks %q, want %q", where, name, pr.HTTPGet.Path, want)
		case pr.HTTPGet.Port != intstr.FromString("admin") && pr.HTTPGet.Port != intstr.FromInt32(ports["admin"]):
			add("%s: %s is on port %s, not the admin listener", where, name, pr.HTTPGet.Port.String())
		}
	}
	checkProbe("livenessProbe", c.LivenessProbe, "/healthz")
	checkProbe("readinessProbe", c.ReadinessProbe, "/readyz")
	if c.StartupProbe != nil {
		checkProbe("startupProbe", c.StartupProbe, "/healthz")
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
		add("%s: resources.requests needs cpu and memory", where)
	}
	if c.Resources.Limits.Memory().IsZero() {
		add("%s: resources.limits needs memory", where)
	}

	// Volumes and what backs them.
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		vols[v.Name] = v
	}
	for _, ctr := range slices.Concat(pod.InitContainers, pod.Containers) {
		for _, m := range ctr.VolumeMounts {
			if _, ok := vols[m.Name]; !ok {
				add("Deployment %s, container %s: volumeMount %q names no volume", d.Name, ctr.Name, m.Name)
			}
		}
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m
	}
	if dataDir := env["SCIMGATE_DATA_DIR"]; dataDir == "" {
		add("%s: SCIMGATE_DATA_DIR is not set", where)
	} else if m, ok := mounts[dataDir]; !ok {
		add("%s: the data dir %s is not a volume (the root filesystem is read-only)", where, dataDir)
	} else if v := vols[m.Name]; v.PersistentVolumeClaim != nil {
		if claim := v.PersistentVolumeClaim.ClaimName; !o.hasClaim(claim) && !o.externalClaim(claim) {
			add("%s: the data volume's claim %q is neither rendered nor declared existing", where, claim)
		}
		for _, cl := range o.Claims {
			if cl.Name == v.PersistentVolumeClaim.ClaimName && slices.Contains(cl.Spec.AccessModes, corev1.ReadWriteMany) {
				add("PersistentVolumeClaim %s: ReadWriteMany: bbolt's lock does not hold across nodes", cl.Name)
			}
		}
	} else if v.EmptyDir == nil {
		add("%s: the data volume is neither a claim nor an emptyDir", where)
	}
	if cfg := env["SCIMGATE_CONFIG"]; cfg == "" {
		add("%s: SCIMGATE_CONFIG is not set", where)
	} else if m, ok := mounts[path.Dir(cfg)]; !ok {
		add("%s: %s is not mounted", where, cfg)
	} else if v := vols[m.Name]; v.ConfigMap == nil {
		add("%s: %s does not come from a ConfigMap", where, cfg)
	} else if cm := o.configMap(v.ConfigMap.Name); cm == nil {
		add("%s: ConfigMap %q is not rendered", where, v.ConfigMap.Name)
	} else if strings.TrimSpace(cm.Data[path.Base(cfg)]) == "" {
		add("ConfigMap %s: no %s", cm.Name, path.Base(cfg))
	}
	for name, key := range fileVars {
		file, ok := env[name]
		if !ok {
			continue
		}
		m, ok := mounts[path.Dir(file)]
		if !ok {
			add("%s: %s=%s is not in a mounted volume", where, name, file)
			continue
		}
		v := vols[m.Name]
		if v.Secret == nil {
			add("%s: %s is not in a Secret volume", where, file)
			continue
		}
		if path.Base(file) != key {
			add("%s: %s reads %s, want the key %s", where, name, file, key)
		}
		if s := o.secret(v.Secret.SecretName); s == nil && v.Secret.SecretName != o.ExistingSecret {
			add("%s: Secret %q is neither rendered nor declared existing", where, v.Secret.SecretName)
		} else if s != nil {
			if _, ok := s.StringData[key]; !ok {
				if _, ok := s.Data[key]; !ok {
					add("Secret %s: no key %q for %s", s.Name, key, name)
				}
			}
		}
	}

	// The Service reaches the pod; the ServiceMonitor and Ingress reach the Service.
	for _, s := range o.Services {
		if !labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) || len(s.Spec.Selector) == 0 {
			add("Service %s: selector %v does not select the pod", s.Name, s.Spec.Selector)
		}
		for _, sp := range s.Spec.Ports {
			if sp.TargetPort.Type == intstr.String && !podHasPort(pod, sp.TargetPort.StrVal) {
				add("Service %s: targetPort %q is no container port", s.Name, sp.TargetPort.StrVal)
			}
		}
	}
	for _, sm := range o.ServiceMonitors {
		sel := labels.SelectorFromSet(sm.Spec.Selector.MatchLabels)
		var svc *corev1.Service
		for _, s := range o.Services {
			if sel.Matches(labels.Set(s.Labels)) {
				svc = s
			}
		}
		if svc == nil {
			add("ServiceMonitor %s: selects no rendered Service", sm.Name)
			continue
		}
		for _, ep := range sm.Spec.Endpoints {
			if !slices.ContainsFunc(svc.Spec.Ports, func(sp corev1.ServicePort) bool { return sp.Name == ep.Port }) {
				add("ServiceMonitor %s: endpoint port %q is not a port of Service %s", sm.Name, ep.Port, svc.Name)
			} else if ep.Port != "admin" {
				add("ServiceMonitor %s: scrapes %q; /metrics is on the admin listener", sm.Name, ep.Port)
			}
		}
	}
	for _, ing := range o.Ingresses {
		for _, rule := range ing.Spec.Rules {
			for _, hp := range rule.HTTP.Paths {
				b := hp.Backend.Service
				if b == nil {
					add("Ingress %s: a path without a Service backend", ing.Name)
					continue
				}
				svc := o.service(b.Name)
				if svc == nil {
					add("Ingress %s: Service %q is not rendered", ing.Name, b.Name)
				} else if !slices.ContainsFunc(svc.Spec.Ports, func(sp corev1.ServicePort) bool { return sp.Name == b.Port.Name && sp.Name == "scim" }) {
					add("Ingress %s: backend port %q is not the scim port of Service %s", ing.Name, b.Port.Name, svc.Name)
				}
			}
		}
	}
	for _, r := range o.Rules {
		for _, g := range r.Spec.Groups {
			for _, rule := range g.Rules {
				if rule.Alert == "" {
					continue
				}
				if rule.Labels["severity"] == "" {
					add("PrometheusRule %s: alert %s has no severity label", r.Name, rule.Alert)
				}
				for _, a := range []string{"summary", "runbook"} {
					if strings.TrimSpace(rule.Annotations[a]) == "" {
						add("PrometheusRule %s: alert %s has no %s annotation", r.Name, rule.Alert, a)
					}
				}
			}
		}
	}
	return p
}

func metav1LabelSelector(d *appsv1.Deployment) (labels.Selector, error) {
	if d.Spec.Selector == nil {
		return nil, fmt.Errorf("missing")
	}
	return labels.ValidatedSelectorFromSet(d.Spec.Selector.MatchLabels)
}

func podHasPort(pod *corev1.PodSpec, name string) bool {
	for _, c := range pod.Containers {
		for _, p := range c.Ports {
			if p.Name == name {
				return true
			}
		}
	}
	return false
}

func (o *Objects) hasClaim(name string) bool {
	return slices.ContainsFunc(o.Claims, func(c *corev1.PersistentVolumeClaim) bool { return c.Name == name })
}

// externalClaim is a claim the values name as existing (persistence.existingClaim).
func (o *Objects) externalClaim(name string) bool {
	return o.ExistingClaim != "" && o.ExistingClaim == name
}

func (o *Objects) configMap(name string) *corev1.ConfigMap {
	for _, c := range o.ConfigMaps {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func (o *Objects) secret(name string) *corev1.Secret {
	for _, s := range o.Secrets {
		if s.Name == name {
			return s
		}
	}
	return nil
}

func (o *Objects) service(name string) *corev1.Service {
	for _, s := range o.Services {
		if s.Name == name {
			return s
		}
	}
	return nil
}
