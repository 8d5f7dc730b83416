package check

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// shellWords splits one shell command line into words: quotes and
// backslashes as sh reads them, no expansion ($PWD stays as written), and
// the operators &&, | and > as words of their own.
func shellWords(line string) ([]string, error) {
	var (
		words []string
		cur   strings.Builder
		have  bool
		quote rune
	)
	flush := func() {
		if have {
			words = append(words, cur.String())
		}
		cur.Reset()
		have = false
	}
	rs := []rune(line)
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else if r == '\\' && quote == '"' && i+1 < len(rs) {
				i++
				cur.WriteRune(rs[i])
			} else {
				cur.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote, have = r, true
		case r == '\\' && i+1 < len(rs):
			i++
			cur.WriteRune(rs[i])
			have = true
		case r == ' ' || r == '\t':
			flush()
		case r == '#' && !have:
			return words, nil // a comment to the end of the line
		case r == '&' && i+1 < len(rs) && rs[i+1] == '&':
			flush()
			words = append(words, "&&")
			i++
		case r == '|' || r == '>' || r == ';':
			flush()
			words = append(words, string(r))
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated %c quote", quote)
	}
	flush()
	return words, nil
}

// commands returns the commands of sh code blocks: continuation lines
// joined, && chains split, each command as words with its source line.
func commands(t *testing.T, blocks []Snippet) (cmds [][]string, lines []int) {
	t.Helper()
	for _, b := range blocks {
		var joined string
		start := b.Line + 1
		for i, line := range strings.Split(strings.TrimRight(b.Code, "\n"), "\n") {
			if joined == "" {
				start = b.Line + 1 + i
			}
			if strings.HasSuffix(line, "\\") {
				joined += strings.TrimSuffix(line, "\\") + " "
				continue
			}
			joined += line
			words, err := shellWords(joined)
			if err != nil {
				t.Fatalf("docs/operations.md:%d: %v", start, err)
			}
			joined = ""
			var cmd []string
			for _, w := range append(words, "&&") {
				if w == "&&" || w == ";" {
					if len(cmd) > 0 {
						cmds, lines = append(cmds, cmd), append(lines, start)
					}
					cmd = nil
					continue
				}
				cmd = append(cmd, w)
			}
		}
	}
	return cmds, lines
}

// docsState is what the page's commands have made so far, in order.
type docsState struct {
	files      map[string]bool                // made with > FILE
	images     map[string]bool                // docker build -t
	namespaces map[string]bool                // kubectl create namespace
	secrets    map[string]map[string][]string // namespace → Secret → keys
	releases   map[string]*Objects            // namespace/deployment → its rendering
}

// TestDocsCommands checks every command line of the deployment sections of
// docs/operations.md (Docker, Compose, Kubernetes, metrics, alerts) the way
// CI can without Docker or a cluster: each helm command is rendered with
// exactly its flags and validated like the defaults; kubectl commands name
// namespaces, Secrets (with the keys the chart reads), Deployments and
// containers that the page's earlier commands made; docker compose uses
// deploy/compose.yaml and its services; docker run passes secrets as
// mounted files. A command this test does not know fails it.
func TestDocsCommands(t *testing.T) {
	var blocks []Snippet
	for _, section := range []string{"Docker", "Reading the metrics", "Alerts"} {
		s, err := Snippets(filepath.Join(repo, "docs/operations.md"), section)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range s {
			if b.Lang == "sh" {
				blocks = append(blocks, b)
			}
		}
	}
	cmds, lines := commands(t, blocks)
	st := &docsState{files: map[string]bool{}, images: map[string]bool{}, namespaces: map[string]bool{},
		secrets: map[string]map[string][]string{}, releases: map[string]*Objects{}}
	counts := map[string]int{}
	for i, cmd := range cmds {
		where := fmt.Sprintf("docs/operations.md:%d: %s", lines[i], strings.Join(cmd, " "))
		// Output redirected to a file makes that file.
		if j := slices.Index(cmd, ">"); j >= 0 && j+1 < len(cmd) {
			st.files[cmd[j+1]] = true
			cmd = cmd[:j]
		}
		counts[cmd[0]]++
		var err error
		switch cmd[0] {
		case "mkdir", "chmod", "head", "base64", "scimgate":
			// Run literally by the CLI's docs test; nothing deploys here.
		case "helm":
			err = st.helm(t, cmd[1:])
		case "kubectl":
			err = st.kubectl(cmd[1:])
		case "docker":
			err = st.docker(cmd[1:])
		default:
			err = fmt.Errorf("a command this check does not know: check it here or leave it out")
		}
		if err != nil {
			t.Errorf("%s\n\t%v", where, err)
		}
	}
	// The page still shows what this test is for.
	for _, c := range []string{"helm", "kubectl", "docker"} {
		if counts[c] == 0 {
			t.Errorf("no %s command found in the deployment sections", c)
		}
	}
	t.Logf("checked %d commands: %v", len(cmds), counts)
}

// flagValue takes "--flag value" or "--flag=value" at args[i]; it returns
// the value and how many words it used, or ok=false.
func flagValue(args []string, i int, names ...string) (value string, used int, ok bool) {
	for _, n := range names {
		if args[i] == n && i+1 < len(args) {
			return args[i+1], 2, true
		}
		if strings.HasPrefix(args[i], n+"=") && strings.HasPrefix(n, "--") {
			return strings.TrimPrefix(args[i], n+"="), 1, true
		}
	}
	return "", 0, false
}

func (st *docsState) helm(t *testing.T, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("helm without a command")
	}
	verb := args[0]
	args = args[1:]
	switch verb {
	case "template", "install":
	case "upgrade":
		if !slices.Contains(args, "--install") {
			return fmt.Errorf("helm upgrade without --install")
		}
	default:
		return fmt.Errorf("helm %s: not a command this page should show", verb)
	}
	in := Install{SetFile: map[string]string{}}
	var pos []string
	for i := 0; i < len(args); {
		if v, n, ok := flagValue(args, i, "-n", "--namespace"); ok {
			in.Namespace, i = v, i+n
		} else if v, n, ok := flagValue(args, i, "-f", "--values"); ok {
			in.ValueFiles, i = append(in.ValueFiles, filepath.Join(repo, v)), i+n
		} else if v, n, ok := flagValue(args, i, "--set"); ok {
			in.Set, i = append(in.Set, v), i+n
		} else if v, n, ok := flagValue(args, i, "--set-string"); ok {
			in.SetString, i = append(in.SetString, v), i+n
		} else if v, n, ok := flagValue(args, i, "--set-file"); ok {
			key, file, _ := strings.Cut(v, "=")
			if !st.files[file] {
				return fmt.Errorf("--set-file %s: %s is not made by an earlier command", key, file)
			}
			in.SetFile[key] = placeholder(file)
			i += n
		} else if args[i] == "--install" || args[i] == "--create-namespace" || args[i] == "--wait" || args[i] == "--atomic" {
			i++
		} else if strings.HasPrefix(args[i], "-") {
			return fmt.Errorf("flag %s: not checked here", args[i])
		} else {
			pos, i = append(pos, args[i]), i+1
		}
	}
	if len(pos) != 2 {
		return fmt.Errorf("want RELEASE CHART, got %q", pos)
	}
	in.Release = pos[0]
	if pos[1] != "deploy/helm/scimgate" {
		return fmt.Errorf("chart %s: the chart is deploy/helm/scimgate", pos[1])
	}
	in.Chart = filepath.Join(repo, pos[1])
	if in.Namespace == "" {
		in.Namespace = "default"
	}
	if verb != "template" && !st.namespaces[in.Namespace] && !slices.Contains(args, "--create-namespace") {
		return fmt.Errorf("namespace %s is not created by an earlier command", in.Namespace)
	}
	r, err := Render(in)
	if err != nil {
		return err
	}
	o, problems, err := Validate(r)
	if err != nil {
		return err
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s", strings.Join(problems, "\n\t"))
	}
	if name := o.ExistingSecret; name != "" && verb != "template" {
		keys, ok := st.secrets[in.Namespace][name]
		if !ok {
			return fmt.Errorf("secrets.existingSecret=%s: no earlier command creates it in %s", name, in.Namespace)
		}
		for _, k := range listOf(r.Values, "secrets", "existingSecretKeys") {
			if !slices.Contains(keys, k) {
				return fmt.Errorf("Secret %s lacks the key %s that the chart mounts", name, k)
			}
		}
	}
	st.releases[in.Namespace+"/"+o.Deployments[0].Name] = o
	return nil
}

// placeholder is what a --set-file file holds in this check.
func placeholder(file string) string {
	if strings.Contains(file, "webhook") {
		return "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n"
	}
	return "token-from-" + filepath.Base(file) + "\n"
}

func listOf(v map[string]any, keys ...string) []string {
	var cur any = v
	for _, k := range keys {
		m, ok := asMap(cur)
		if !ok {
			return nil
		}
		cur = m[k]
	}
	var out []string
	if l, ok := cur.([]any); ok {
		for _, e := range l {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
	}
	return out
}

func (st *docsState) kubectl(args []string) error {
	ns := "default"
	var rest []string
	for i := 0; i < len(args); {
		if v, n, ok := flagValue(args, i, "-n", "--namespace"); ok {
			ns, i = v, i+n
			continue
		}
		rest, i = append(rest, args[i]), i+1
	}
	switch {
	case len(rest) == 3 && rest[0] == "create" && rest[1] == "namespace":
		st.namespaces[rest[2]] = true
	case len(rest) >= 4 && rest[0] == "create" && rest[1] == "secret" && rest[2] == "generic":
		if !st.namespaces[ns] {
			return fmt.Errorf("namespace %s is not created by an earlier command", ns)
		}
		var keys []string
		for _, a := range rest[4:] {
			v, ok := strings.CutPrefix(a, "--from-file=")
			if !ok {
				return fmt.Errorf("%s: only --from-file=KEY=FILE is checked here", a)
			}
			key, file, ok := strings.Cut(v, "=")
			if !ok {
				return fmt.Errorf("%s: name the key (KEY=FILE)", a)
			}
			if !st.files[file] {
				return fmt.Errorf("%s is not made by an earlier command", file)
			}
			if !slices.Contains([]string{"scim-token", "admin-token", "webhook-secret", "api-token"}, key) {
				return fmt.Errorf("key %s: the chart reads scim-token, admin-token, webhook-secret, api-token", key)
			}
			keys = append(keys, key)
		}
		if st.secrets[ns] == nil {
			st.secrets[ns] = map[string][]string{}
		}
		st.secrets[ns][rest[3]] = keys
	case len(rest) >= 2 && (rest[0] == "exec" || rest[0] == "logs"):
		name, ok := strings.CutPrefix(rest[1], "deploy/")
		if !ok {
			return fmt.Errorf("%s %s: name the Deployment as deploy/NAME", rest[0], rest[1])
		}
		o := st.releases[ns+"/"+name]
		if o == nil {
			return fmt.Errorf("no earlier helm command renders Deployment %s in %s", name, ns)
		}
		c := slices.Index(rest, "-c")
		if c < 0 || c+1 >= len(rest) {
			return fmt.Errorf("name the container (-c scimgate): a sidecar pod has two")
		}
		if ScimgateContainer(o.Deployments[0]) == nil || rest[c+1] != Container {
			return fmt.Errorf("container %s is not scimgate's", rest[c+1])
		}
		if rest[0] == "exec" {
			dd := slices.Index(rest, "--")
			if dd < 0 || dd+1 >= len(rest) || rest[dd+1] != "scimgate" {
				return fmt.Errorf("exec runs something other than the scimgate binary (distroless has no shell)")
			}
		}
	default:
		return fmt.Errorf("kubectl %s: not checked here", strings.Join(rest, " "))
	}
	return nil
}

// knownVars are the gateway's environment variables (README.md,
// "Configure").
var knownVars = []string{"SCIMGATE_CONFIG", "SCIMGATE_LISTEN", "SCIMGATE_ADMIN_LISTEN", "SCIMGATE_DATA_DIR",
	"SCIMGATE_WEBHOOK_URL", "SCIMGATE_SCIM_TOKEN_FILE", "SCIMGATE_ADMIN_TOKEN_FILE", "SCIMGATE_WEBHOOK_SECRET_FILE", "SCIMGATE_API_TOKEN_FILE"}

func (st *docsState) docker(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("docker without a command")
	}
	switch args[0] {
	case "build":
		if len(args) != 4 || args[1] != "-t" || args[3] != "." {
			return fmt.Errorf("only `docker build -t NAME .` is checked here")
		}
		if _, err := os.Stat(filepath.Join(repo, "Dockerfile")); err != nil {
			return err
		}
		st.images[args[2]] = true
	case "run":
		mounts := map[string]string{} // destination → source
		env := map[string]string{}
		var flags []string
		var pos []string
		for i := 1; i < len(args); {
			if v, n, ok := flagValue(args, i, "-v", "--volume"); ok {
				parts := strings.Split(v, ":")
				if len(parts) < 2 {
					return fmt.Errorf("-v %s", v)
				}
				mounts[parts[1]] = parts[0]
				if src, ok := strings.CutPrefix(parts[0], "$PWD/"); ok && !st.files[src] {
					return fmt.Errorf("-v %s: %s is not made by an earlier command", v, src)
				}
				i += n
			} else if v, n, ok := flagValue(args, i, "-e", "--env"); ok {
				name, value, _ := strings.Cut(v, "=")
				env[name] = value
				i += n
			} else if v, n, ok := flagValue(args, i, "-p", "--publish", "--name", "--cap-drop", "--security-opt"); ok {
				flags = append(flags, args[i]+"="+v)
				i += n
			} else if args[i] == "-d" || args[i] == "--read-only" {
				flags = append(flags, args[i])
				i++
			} else if strings.HasPrefix(args[i], "-") {
				return fmt.Errorf("flag %s: not checked here", args[i])
			} else {
				pos, i = append(pos, args[i]), i+1
			}
		}
		if len(pos) != 1 || !st.images[pos[0]] {
			return fmt.Errorf("image %q is not built by an earlier command", pos)
		}
		for _, want := range []string{"--read-only", "--cap-drop=ALL", "--security-opt=no-new-privileges"} {
			if !slices.Contains(flags, want) {
				return fmt.Errorf("missing %s", want)
			}
		}
		for _, f := range flags {
			if p, ok := strings.CutPrefix(f, "-p="); ok && !strings.HasPrefix(p, "127.0.0.1:") {
				return fmt.Errorf("-p %s: publish plain-HTTP SCIM on 127.0.0.1 only", p)
			}
		}
		if _, ok := mounts["/data"]; !ok {
			return fmt.Errorf("no volume for /data")
		}
		for name, value := range env {
			if !slices.Contains(knownVars, name) {
				return fmt.Errorf("-e %s: not a variable the gateway reads (or a secret by value)", name)
			}
			if _, ok := fileVars[name]; ok && mounts[value] == "" {
				return fmt.Errorf("-e %s=%s: nothing is mounted there", name, value)
			}
		}
	case "compose":
		if len(args) < 3 || args[1] != "-f" || args[2] != "deploy/compose.yaml" {
			return fmt.Errorf("use -f deploy/compose.yaml")
		}
		p, err := LoadCompose(context.Background(), filepath.Join(repo, args[2]), map[string]string{})
		if err != nil {
			return err
		}
		if len(args) < 4 {
			return fmt.Errorf("docker compose without a command")
		}
		sub, rest := args[3], args[4:]
		switch sub {
		case "up", "down", "ps", "build", "config", "pull", "stop", "restart":
			for _, a := range rest {
				if !strings.HasPrefix(a, "-") {
					if _, ok := p.Services[a]; !ok {
						return fmt.Errorf("no service %s", a)
					}
				}
			}
		case "logs", "exec":
			var svc []string
			for _, a := range rest {
				if !strings.HasPrefix(a, "-") {
					svc = append(svc, a)
				}
			}
			if len(svc) == 0 {
				return fmt.Errorf("%s: name a service", sub)
			}
			if _, ok := p.Services[svc[0]]; !ok {
				return fmt.Errorf("no service %s", svc[0])
			}
			if sub == "exec" && (len(svc) < 2 || svc[1] != "scimgate") {
				return fmt.Errorf("exec runs something other than the scimgate binary (distroless has no shell)")
			}
		default:
			return fmt.Errorf("docker compose %s: not checked here", sub)
		}
	default:
		return fmt.Errorf("docker %s: not checked here", args[0])
	}
	return nil
}
