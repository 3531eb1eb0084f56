package deploy_test

import (
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
)

const (
	composeFile = "../docker-compose.yml"
	// demoAdminToken is the documented default admin token of the demo stack
	// (README, docker-compose.yml); the only secret-looking value allowed inline.
	demoAdminToken = "tidemark-demo-token"
)

// roles are the long-running tidemark services; migrate runs once before them.
var roles = []string{"scheduler", "worker", "server"}

// loadCompose loads docker-compose.yml as `docker compose` does, with env as
// the only environment, so the host's variables cannot change the result.
func loadCompose(t *testing.T, env map[string]string) *types.Project {
	t.Helper()
	path, err := filepath.Abs(composeFile)
	if err != nil {
		t.Fatal(err)
	}
	if env == nil {
		env = map[string]string{}
	}
	project, err := loader.LoadWithContext(t.Context(), types.ConfigDetails{
		WorkingDir:  filepath.Dir(path),
		ConfigFiles: []types.ConfigFile{{Filename: path}},
		Environment: env,
	})
	if err != nil {
		t.Fatalf("load %s: %v", composeFile, err)
	}
	return project
}

func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, ok := p.Services[name]
	if !ok {
		t.Fatalf("service %q missing from %s", name, composeFile)
	}
	return s
}

func env(s types.ServiceConfig, key string) string {
	if v := s.Environment[key]; v != nil {
		return *v
	}
	return ""
}

func TestServices(t *testing.T) {
	t.Parallel()
	p := loadCompose(t, nil)

	tests := []struct {
		name        string
		image       string
		healthcheck bool
	}{
		{name: "redis", image: "redis:7-alpine", healthcheck: true},
		{name: "postgres", image: "postgres:16-alpine", healthcheck: true},
		{name: "demo-upstream", image: "tidemark:dev", healthcheck: true},
		{name: "migrate", image: "tidemark:dev"},
		{name: "scheduler", image: "tidemark:dev"},
		{name: "worker", image: "tidemark:dev"},
		{name: "server", image: "tidemark:dev", healthcheck: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := service(t, p, tt.name)
			if s.Image != tt.image {
				t.Errorf("image = %q, want %q", s.Image, tt.image)
			}
			if tt.image == "tidemark:dev" && s.Build == nil {
				t.Error("no build section: the tidemark image is built from the Dockerfile")
			}
			if !tt.healthcheck {
				return
			}
			hc := s.HealthCheck
			if hc == nil || hc.Disable || len(hc.Test) < 2 {
				t.Fatalf("healthcheck = %+v, want a test command", hc)
			}
		})
	}
}

func TestReplicas(t *testing.T) {
	t.Parallel()
	p := loadCompose(t, nil)

	tests := []struct {
		name string
		want int
	}{
		{name: "scheduler", want: 2},
		{name: "worker", want: 2},
		{name: "server", want: 1},
		{name: "migrate", want: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := service(t, p, tt.name)
			if got := s.GetScale(); got != tt.want {
				t.Errorf("replicas = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestStartOrder(t *testing.T) {
	t.Parallel()
	p := loadCompose(t, nil)

	roleDeps := map[string]string{
		"redis":    types.ServiceConditionHealthy,
		"postgres": types.ServiceConditionHealthy,
		"migrate":  types.ServiceConditionCompletedSuccessfully,
	}
	tests := []struct {
		name string
		want map[string]string // dependency → condition
	}{
		{name: "migrate", want: map[string]string{"postgres": types.ServiceConditionHealthy}},
		{name: "scheduler", want: roleDeps},
		{name: "worker", want: roleDeps},
		{name: "server", want: roleDeps},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := service(t, p, tt.name)
			for dep, cond := range tt.want {
				got, ok := s.DependsOn[dep]
				if !ok {
					t.Errorf("depends_on lacks %s", dep)
					continue
				}
				if got.Condition != cond {
					t.Errorf("depends_on %s: condition %q, want %q", dep, got.Condition, cond)
				}
			}
			if tt.name == "migrate" && s.Restart != types.RestartPolicyNo {
				t.Errorf("restart = %q, want %q: a one-shot job", s.Restart, types.RestartPolicyNo)
			}
		})
	}
}

func TestCommands(t *testing.T) {
	t.Parallel()
	p := loadCompose(t, nil)

	tests := []struct {
		name       string
		entrypoint []string // nil: the image's (tidemark)
		command    []string // a prefix of the service's command
	}{
		{name: "migrate", command: []string{"migrate"}},
		{name: "scheduler", command: []string{"scheduler"}},
		{name: "worker", command: []string{"worker"}},
		{name: "server", command: []string{"server"}},
		{name: "demo-upstream", entrypoint: []string{"demo-upstream"}, command: []string{"--addr", "0.0.0.0:9000"}},
		{name: "redis", command: []string{"redis-server", "--maxmemory-policy", "noeviction"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := service(t, p, tt.name)
			if !slices.Equal(s.Entrypoint, tt.entrypoint) {
				t.Errorf("entrypoint = %q, want %q", s.Entrypoint, tt.entrypoint)
			}
			if len(s.Command) < len(tt.command) || !slices.Equal(s.Command[:len(tt.command)], tt.command) {
				t.Errorf("command = %q, want it to start with %q", s.Command, tt.command)
			}
		})
	}
}

// TestRedisKeepsEverything: Asynq loses tasks if Redis evicts keys, and the
// demo's Redis keeps nothing on disk.
func TestRedisKeepsEverything(t *testing.T) {
	t.Parallel()
	s := service(t, loadCompose(t, nil), "redis")
	cmd := strings.Join(s.Command, " ")
	for _, want := range []string{"--maxmemory-policy noeviction", "--appendonly no"} {
		if !strings.Contains(cmd, want) {
			t.Errorf("redis command %q lacks %q", cmd, want)
		}
	}
	if !slices.Contains(s.Command, "--save") {
		t.Errorf("redis command %q does not turn off snapshots (--save \"\")", cmd)
	}
}

func TestEnvironment(t *testing.T) {
	t.Parallel()
	p := loadCompose(t, nil)

	urls := []struct {
		key, host string
	}{
		{key: "TIDEMARK_DATABASE_URL", host: "postgres"},
		{key: "TIDEMARK_REDIS_URL", host: "redis"},
		{key: "DEMO_UPSTREAM_URL", host: "demo-upstream"},
	}
	for _, name := range append([]string{"migrate"}, roles...) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := service(t, p, name)
			for _, u := range urls {
				raw := env(s, u.key)
				parsed, err := url.Parse(raw)
				if err != nil || parsed.Hostname() != u.host {
					t.Errorf("%s = %q, want a URL on host %q", u.key, raw, u.host)
				}
			}
			if got, want := env(s, "TIDEMARK_CONFIG"), "/etc/tidemark/demo.yaml"; got != want {
				t.Errorf("TIDEMARK_CONFIG = %q, want %q", got, want)
			}
		})
	}

	t.Run("server listens on the compose network", func(t *testing.T) {
		t.Parallel()
		s := service(t, p, "server")
		if got := env(s, "TIDEMARK_ADDR"); got != "0.0.0.0:8080" {
			t.Errorf("TIDEMARK_ADDR = %q, want 0.0.0.0:8080", got)
		}
	})
}

// TestPublishedAddress: the server's port is published on 127.0.0.1 unless
// TIDEMARK_PUBLISH_ADDR says otherwise, and the server is told where it is
// published, so that it can refuse the demo token beyond loopback (see
// server.Config.PublishAddr; cmd/tidemark's TestConfigCheck runs that).
func TestPublishedAddress(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{name: "default: loopback only", env: nil, want: "127.0.0.1"},
		{name: "an address of the operator's", env: map[string]string{"TIDEMARK_PUBLISH_ADDR": "0.0.0.0", "TIDEMARK_ADMIN_TOKEN": "0wn-s3cret"}, want: "0.0.0.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := service(t, loadCompose(t, tt.env), "server")
			if len(s.Ports) != 1 {
				t.Fatalf("ports = %+v, want 8080 published once", s.Ports)
			}
			if port := s.Ports[0]; port.Target != 8080 || port.Published != "8080" || port.HostIP != tt.want {
				t.Errorf("port = %s:%s -> %d, want %s:8080 -> 8080", port.HostIP, port.Published, port.Target, tt.want)
			}
			if got := env(s, "TIDEMARK_PUBLISH_ADDR"); got != tt.want {
				t.Errorf("TIDEMARK_PUBLISH_ADDR = %q, want %q, the address the port is published on", got, tt.want)
			}
		})
	}
	for name, s := range loadCompose(t, nil).Services {
		if name != "server" && len(s.Ports) > 0 {
			t.Errorf("service %s publishes %+v: only the server is published", name, s.Ports)
		}
	}
}

// TestNoInlineSecrets: secrets reach the stack from the environment; the one
// inline value is the documented demo admin token default.
func TestNoInlineSecrets(t *testing.T) {
	t.Parallel()
	p := loadCompose(t, nil)
	secretName := regexp.MustCompile(`(?i)token|secret|passw|credential|api_?key|private`)

	for name, s := range p.Services {
		for key, value := range s.Environment {
			if value == nil || *value == "" {
				continue
			}
			if secretName.MatchString(key) && !(name == "server" && key == "TIDEMARK_ADMIN_TOKEN" && *value == demoAdminToken) {
				t.Errorf("service %s: %s has an inline value; take it from the environment", name, key)
			}
			if u, err := url.Parse(*value); err == nil && u.User != nil {
				if _, hasPassword := u.User.Password(); hasPassword {
					t.Errorf("service %s: %s carries a password", name, key)
				}
			}
		}
	}
	for name, secret := range p.Secrets {
		if secret.Content != "" {
			t.Errorf("secret %s has inline content", name)
		}
	}
}

func TestAdminToken(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{name: "demo default", env: nil, want: demoAdminToken},
		{name: "from the environment", env: map[string]string{"TIDEMARK_ADMIN_TOKEN": "s3cret-from-env"}, want: "s3cret-from-env"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := service(t, loadCompose(t, tt.env), "server")
			if got := env(s, "TIDEMARK_ADMIN_TOKEN"); got != tt.want {
				t.Errorf("TIDEMARK_ADMIN_TOKEN = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestImage checks the Dockerfile against what the compose file relies on:
// the binaries it runs and the config path it names.
func TestImage(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	dockerfile := string(b)

	tests := []struct {
		name, want string
	}{
		{name: "builds tidemark", want: "./cmd/tidemark"},
		{name: "builds demo-upstream", want: "./cmd/demo-upstream"},
		{name: "builds the healthcheck", want: "./deploy/httpcheck"},
		{name: "static binaries", want: "CGO_ENABLED=0"},
		{name: "reproducible paths", want: "-trimpath"},
		{name: "distroless runtime", want: "FROM gcr.io/distroless/static-debian12:nonroot"},
		{name: "ships the examples where TIDEMARK_CONFIG points", want: "COPY examples/ /etc/tidemark/"},
		{name: "tidemark is the entrypoint", want: `ENTRYPOINT ["tidemark"]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if !strings.Contains(dockerfile, tt.want) {
				t.Errorf("Dockerfile lacks %q", tt.want)
			}
		})
	}

	t.Run("demo config exists", func(t *testing.T) {
		t.Parallel()
		if _, err := os.Stat("../examples/demo.yaml"); err != nil {
			t.Errorf("compose runs TIDEMARK_CONFIG=/etc/tidemark/demo.yaml from examples/: %v", err)
		}
	})
}
