package gateway_test

import (
	"reflect"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/scimgate/scimgate/gateway"
)

// A bearer token in YAML is the token itself or {token, allowed_cidrs};
// any other key is refused with its line and the keys allowed, as every
// other section's unknown keys are (mapping.WalkKeys).
func TestBearerTokenYAML(t *testing.T) {
	var got []gateway.BearerToken
	src := "- plain-token\n- token: t2\n  allowed_cidrs: [10.0.0.0/8]\n"
	if err := yaml.Unmarshal([]byte(src), &got); err != nil {
		t.Fatal(err)
	}
	want := []gateway.BearerToken{{Token: "plain-token"}, {Token: "t2", AllowedCIDRs: []string{"10.0.0.0/8"}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decoded %+v, want %+v", got, want)
	}
	for _, tt := range []struct{ src, want string }{
		{"- token: t\n  allowed_cidr: [10.0.0.0/8]\n", `line 2: unknown key "allowed_cidr" (allowed here: allowed_cidrs, token)`},
		{"- [t]\n", "line 1: expected a mapping with token, allowed_cidrs"},
	} {
		var bt []gateway.BearerToken
		err := yaml.Unmarshal([]byte(tt.src), &bt)
		if err == nil || err.Error() != tt.want {
			t.Errorf("%q: error %v, want %q", tt.src, err, tt.want)
		}
	}
}
