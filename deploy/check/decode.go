package check

import (
	"errors"
	"fmt"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v3/pkg/chartutil"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// scheme knows exactly the API groups the chart may render; any other kind
// is an error ("no kind … is registered").
var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(corev1.AddToScheme(s))
	utilruntime.Must(appsv1.AddToScheme(s))
	utilruntime.Must(networkingv1.AddToScheme(s))
	utilruntime.Must(monitoringv1.AddToScheme(s))
	return s
}()

// strict is the API server's strict decoding (kubectl apply
// --validate=strict): unknown and duplicate fields are errors, field names
// are case-sensitive.
var strict = serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()

// Objects is a rendering decoded into the API types.
type Objects struct {
	Deployments     []*appsv1.Deployment
	Services        []*corev1.Service
	ConfigMaps      []*corev1.ConfigMap
	Secrets         []*corev1.Secret
	Claims          []*corev1.PersistentVolumeClaim
	ServiceAccounts []*corev1.ServiceAccount
	Ingresses       []*networkingv1.Ingress
	ServiceMonitors []*monitoringv1.ServiceMonitor
	Rules           []*monitoringv1.PrometheusRule

	// ExistingClaim and ExistingSecret are the objects the values say exist
	// already (persistence.existingClaim, secrets.existingSecret).
	ExistingClaim, ExistingSecret string
}

// Validate decodes a rendering strictly and returns its objects and the
// problems Objects.Problems finds; err is a decoding or metadata error.
func Validate(r *Rendering) (*Objects, []string, error) {
	o, err := Decode(r)
	if err != nil {
		return o, nil, err
	}
	o.ExistingClaim = lookup(r.Values, "persistence", "existingClaim")
	o.ExistingSecret = lookup(r.Values, "secrets", "existingSecret")
	return o, o.Problems(), nil
}

// lookup returns a string value at a path of nested maps, or "".
func lookup(v map[string]any, keys ...string) string {
	var cur any = v
	for _, k := range keys {
		m, ok := asMap(cur)
		if !ok {
			return ""
		}
		cur = m[k]
	}
	s, _ := cur.(string)
	return s
}

func asMap(v any) (map[string]any, bool) {
	switch m := v.(type) {
	case map[string]any:
		return m, true
	case chartutil.Values:
		return m, true
	}
	return nil, false
}

// Decode decodes every manifest strictly and checks its metadata as the API
// server would (name, labels, annotations). All problems are reported.
func Decode(r *Rendering) (*Objects, error) {
	o := &Objects{}
	var errs []error
	for _, m := range r.Manifests {
		obj, _, err := strict.Decode(m.YAML, nil, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s (%s %s): %w", m.Template, m.Kind, m.Name, err))
			continue
		}
		switch v := obj.(type) {
		case *appsv1.Deployment:
			o.Deployments = append(o.Deployments, v)
		case *corev1.Service:
			o.Services = append(o.Services, v)
		case *corev1.ConfigMap:
			o.ConfigMaps = append(o.ConfigMaps, v)
		case *corev1.Secret:
			o.Secrets = append(o.Secrets, v)
		case *corev1.PersistentVolumeClaim:
			o.Claims = append(o.Claims, v)
		case *corev1.ServiceAccount:
			o.ServiceAccounts = append(o.ServiceAccounts, v)
		case *networkingv1.Ingress:
			o.Ingresses = append(o.Ingresses, v)
		case *monitoringv1.ServiceMonitor:
			o.ServiceMonitors = append(o.ServiceMonitors, v)
		case *monitoringv1.PrometheusRule:
			o.Rules = append(o.Rules, v)
		default:
			errs = append(errs, fmt.Errorf("%s: %T is not a kind this chart should render", m.Template, obj))
			continue
		}
		meta, err := apimeta.Accessor(obj)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		// Every object here is namespaced and named as a DNS subdomain;
		// a Service's name is also its DNS label.
		for _, e := range apivalidation.ValidateObjectMetaAccessor(meta, false, apivalidation.NameIsDNSSubdomain, field.NewPath("metadata")) {
			errs = append(errs, fmt.Errorf("%s (%s %s): %s", m.Template, m.Kind, m.Name, e))
		}
		if m.Kind == "Service" {
			for _, e := range apivalidation.NameIsDNS1035Label(m.Name, false) {
				errs = append(errs, fmt.Errorf("%s: Service name %q: %s", m.Template, m.Name, e))
			}
		}
	}
	return o, errors.Join(errs...)
}
