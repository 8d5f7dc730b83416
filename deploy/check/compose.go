package check

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strings"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
)

// LoadCompose loads a Compose file as `docker compose config` does:
// interpolated from env (only env: not this process's environment),
// validated against the Compose specification's JSON schema (unknown keys
// and wrong types fail), normalized, and checked for consistency (every
// secret, volume and network a service names is declared).
func LoadCompose(ctx context.Context, file string, env map[string]string) (*types.Project, error) {
	details, err := loader.LoadConfigFiles(ctx, []string{file}, filepath.Dir(file))
	if err != nil {
		return nil, err
	}
	details.Environment = env
	return loader.LoadWithContext(ctx, *details)
}

// ComposeProblems checks that the project runs scimgate as the gateway
// needs: a health check through `scimgate health`, secrets as files read
// through the _FILE variables (no secret value in the environment), /data
// on a named volume, a read-only root filesystem with every capability
// dropped, and a receiver that the gateway's webhook URL reaches.
func ComposeProblems(p *types.Project) []string {
	var out []string
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	gw, ok := p.Services["scimgate"]
	if !ok {
		return []string{"no service scimgate"}
	}
	for _, s := range p.Services {
		where := "service " + s.Name
		if !s.ReadOnly {
			add("%s: read_only must be true (distroless writes only /data)", where)
		}
		if !slices.Contains(s.CapDrop, "ALL") || len(s.CapAdd) > 0 {
			add("%s: cap_drop must be [ALL] and cap_add empty", where)
		}
		if !slices.Contains(s.SecurityOpt, "no-new-privileges:true") {
			add("%s: security_opt needs no-new-privileges:true", where)
		}
		if s.User != "65532:65532" {
			add("%s: user = %q, want 65532:65532 (distroless nonroot)", where, s.User)
		}
		mounted := map[string]bool{}
		for _, sec := range s.Secrets {
			target := sec.Target
			if target == "" {
				target = sec.Source
			}
			if !strings.HasPrefix(target, "/") {
				target = "/run/secrets/" + target
			}
			mounted[target] = true
			if _, ok := p.Secrets[sec.Source]; !ok {
				add("%s: secret %q is not declared", where, sec.Source)
			}
		}
		for name, v := range s.Environment {
			if secretVar.MatchString(name) {
				add("%s: %s in the environment; use %s_FILE with a secret", where, name, name)
			}
			if _, ok := fileVars[name]; ok && (v == nil || !mounted[*v]) {
				add("%s: %s=%v is not a mounted secret", where, name, deref(v))
			}
		}
		if s.Build != nil {
			if _, err := filepath.Rel(p.WorkingDir, s.Build.Context); err != nil || s.Build.Dockerfile != "Dockerfile" {
				add("%s: build %+v", where, s.Build)
			}
		}
	}
	hc := gw.HealthCheck
	if hc == nil || !slices.Equal([]string(hc.Test), []string{"CMD", "/usr/local/bin/scimgate", "health"}) {
		add("service scimgate: healthcheck must run [CMD, /usr/local/bin/scimgate, health]")
	}
	if !slices.ContainsFunc(gw.Volumes, func(v types.ServiceVolumeConfig) bool {
		return v.Type == types.VolumeTypeVolume && v.Target == deref(gw.Environment["SCIMGATE_DATA_DIR"]) && p.Volumes[v.Source].Name != ""
	}) {
		add("service scimgate: SCIMGATE_DATA_DIR is not a named volume")
	}
	for _, port := range gw.Ports {
		if port.HostIP != "127.0.0.1" {
			add("service scimgate: port %d is published on %q: plain-HTTP SCIM belongs behind a TLS proxy, publish on 127.0.0.1", port.Target, port.HostIP)
		}
	}
	hook := deref(gw.Environment["SCIMGATE_WEBHOOK_URL"])
	u, err := url.Parse(hook)
	if err != nil || u.Host == "" {
		add("service scimgate: SCIMGATE_WEBHOOK_URL %q is not a URL", hook)
		return out
	}
	rcv, ok := p.Services[u.Hostname()]
	if !ok {
		add("service scimgate: the webhook host %q is no service", u.Hostname())
		return out
	}
	cmd := []string(rcv.Command)
	if i := slices.Index(cmd, "--addr"); len(cmd) == 0 || cmd[0] != "listen" || i < 0 || i+1 >= len(cmd) {
		add("service %s: command %q is not `listen --addr HOST:PORT`", rcv.Name, cmd)
	} else if _, port, err := net.SplitHostPort(cmd[i+1]); err != nil || port != u.Port() {
		add("service %s: listens on %s, the gateway delivers to port %s", rcv.Name, cmd[i+1], u.Port())
	}
	return out
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
