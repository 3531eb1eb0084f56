package deploy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/jobs"
)

// The kustomizations under deploy/k8s, built the way `kubectl apply -k`
// builds them. Tests that need base or overlay plus a component build a
// throwaway overlay in a temporary directory.
const (
	k8sBase       = "k8s/base"
	k8sDemo       = "k8s/overlays/demo"
	kedaComp      = "k8s/components/keda"
	hpaComp       = "k8s/components/hpa"
	configPath    = "/etc/tidemark/tidemark.yaml"
	workerName    = "tidemark-worker"
	serverName    = "tidemark-server"
	secretName    = "tidemark"
	scaledObjAPI  = "keda.sh/v1alpha1"
	demoNamespace = "tidemark-demo"
)

// roleEnv is what each role's binary reads from its environment (see
// cmd/tidemark/env.go and roles.go): every role loads the config and opens
// Postgres and Redis; the server also listens and guards its admin API.
var roleEnv = map[string][]string{
	"scheduler": {"TIDEMARK_CONFIG", "TIDEMARK_DATABASE_URL", "TIDEMARK_REDIS_URL"},
	"worker":    {"TIDEMARK_CONFIG", "TIDEMARK_DATABASE_URL", "TIDEMARK_REDIS_URL"},
	"server":    {"TIDEMARK_CONFIG", "TIDEMARK_DATABASE_URL", "TIDEMARK_REDIS_URL", "TIDEMARK_ADDR", "TIDEMARK_ADMIN_TOKEN"},
}

// scaledObject is the part of KEDA's ScaledObject (keda.sh/v1alpha1) the
// manifests use; decoding rejects anything else, so a typo fails the test.
type scaledObject struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   objectMeta `json:"metadata"`
	Spec       struct {
		ScaleTargetRef struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Name       string `json:"name"`
		} `json:"scaleTargetRef"`
		MinReplicaCount *int32 `json:"minReplicaCount"`
		MaxReplicaCount *int32 `json:"maxReplicaCount"`
		PollingInterval *int32 `json:"pollingInterval"`
		CooldownPeriod  *int32 `json:"cooldownPeriod"`
		Advanced        *struct {
			HorizontalPodAutoscalerConfig *struct {
				Behavior *autoscalingv2.HorizontalPodAutoscalerBehavior `json:"behavior"`
			} `json:"horizontalPodAutoscalerConfig"`
		} `json:"advanced"`
		Triggers []struct {
			Type              string            `json:"type"`
			Metadata          map[string]string `json:"metadata"`
			AuthenticationRef *struct {
				Name string `json:"name"`
			} `json:"authenticationRef"`
		} `json:"triggers"`
	} `json:"spec"`
}

// triggerAuthentication is the part of KEDA's TriggerAuthentication used.
type triggerAuthentication struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   objectMeta `json:"metadata"`
	Spec       struct {
		SecretTargetRef []struct {
			Parameter string `json:"parameter"`
			Name      string `json:"name"`
			Key       string `json:"key"`
		} `json:"secretTargetRef"`
	} `json:"spec"`
}

type objectMeta struct {
	Name      string            `json:"name"`
	Namespace string            `json:"namespace"`
	Labels    map[string]string `json:"labels"`
}

// manifests is one kustomize build, every object decoded into its type.
type manifests struct {
	deployments  map[string]*appsv1.Deployment
	statefulSets map[string]*appsv1.StatefulSet
	services     map[string]*corev1.Service
	configMaps   map[string]*corev1.ConfigMap
	secrets      map[string]*corev1.Secret
	pdbs         map[string]*policyv1.PodDisruptionBudget
	hpas         map[string]*autoscalingv2.HorizontalPodAutoscaler
	namespaces   map[string]*corev1.Namespace
	scaled       map[string]*scaledObject
	triggerAuths map[string]*triggerAuthentication
}

// build runs kustomize on dir (relative to deploy/ or absolute) and decodes
// every object strictly: an unknown kind or field fails the test.
func build(t *testing.T, dir string) *manifests {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	m := &manifests{
		deployments: map[string]*appsv1.Deployment{}, statefulSets: map[string]*appsv1.StatefulSet{},
		services: map[string]*corev1.Service{}, configMaps: map[string]*corev1.ConfigMap{},
		secrets: map[string]*corev1.Secret{}, pdbs: map[string]*policyv1.PodDisruptionBudget{},
		hpas: map[string]*autoscalingv2.HorizontalPodAutoscaler{}, namespaces: map[string]*corev1.Namespace{},
		scaled: map[string]*scaledObject{}, triggerAuths: map[string]*triggerAuthentication{},
	}
	for _, r := range rm.Resources() {
		data, err := r.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		gvk := r.GetApiVersion() + " " + r.GetKind()
		name := r.GetName()
		var obj any
		switch gvk {
		case "apps/v1 Deployment":
			obj = add(m.deployments, name)
		case "apps/v1 StatefulSet":
			obj = add(m.statefulSets, name)
		case "v1 Service":
			obj = add(m.services, name)
		case "v1 ConfigMap":
			obj = add(m.configMaps, name)
		case "v1 Secret":
			obj = add(m.secrets, name)
		case "v1 Namespace":
			obj = add(m.namespaces, name)
		case "policy/v1 PodDisruptionBudget":
			obj = add(m.pdbs, name)
		case "autoscaling/v2 HorizontalPodAutoscaler":
			obj = add(m.hpas, name)
		case scaledObjAPI + " ScaledObject":
			obj = add(m.scaled, name)
		case scaledObjAPI + " TriggerAuthentication":
			obj = add(m.triggerAuths, name)
		default:
			t.Errorf("%s: %s %q: no test knows this kind; add it to build()", dir, gvk, name)
			continue
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(obj); err != nil {
			t.Errorf("%s: %s %q: %v", dir, gvk, name, err)
		}
	}
	return m
}

func add[T any](m map[string]*T, name string) *T {
	v := new(T)
	m[name] = v
	return v
}

// withComponents writes an overlay of dir plus the given components to a
// temporary directory, as a user's own overlay would. Like theirs, it must
// put the components' objects in dir's namespace, or the TriggerAuthentication
// would not find its Secret.
func withComponents(t *testing.T, dir, namespace string, components ...string) string {
	t.Helper()
	abs := func(p string) string {
		a, err := filepath.Abs(p)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	// kustomize refuses absolute roots: refer to them relative to tmp.
	tmp := t.TempDir()
	rel := func(p string) string {
		r, err := filepath.Rel(tmp, abs(p))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n")
	if namespace != "" {
		fmt.Fprintf(&b, "namespace: %s\n", namespace)
	}
	fmt.Fprintf(&b, "resources:\n  - %s\ncomponents:\n", rel(dir))
	for _, c := range components {
		fmt.Fprintf(&b, "  - %s\n", rel(c))
	}
	if err := os.WriteFile(filepath.Join(tmp, "kustomization.yaml"), []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return tmp
}

// podSpecs are the pod templates of every workload, by workload name.
func (m *manifests) podSpecs() map[string]*corev1.PodTemplateSpec {
	out := map[string]*corev1.PodTemplateSpec{}
	for n, d := range m.deployments {
		out["Deployment/"+n] = &d.Spec.Template
	}
	for n, s := range m.statefulSets {
		out["StatefulSet/"+n] = &s.Spec.Template
	}
	return out
}

func roleDeployment(t *testing.T, m *manifests, role string) (*appsv1.Deployment, *corev1.Container) {
	t.Helper()
	d, ok := m.deployments["tidemark-"+role]
	if !ok {
		t.Fatalf("no Deployment tidemark-%s", role)
	}
	for i, c := range d.Spec.Template.Spec.Containers {
		if c.Name == role {
			return d, &d.Spec.Template.Spec.Containers[i]
		}
	}
	t.Fatalf("Deployment tidemark-%s has no container %q", role, role)
	return nil, nil
}

func envVar(c *corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

// envValue is the literal value of an env var, or, from a Secret or
// ConfigMap of the build, its value there; ok is false if neither is found.
func envValue(m *manifests, e *corev1.EnvVar) (string, bool) {
	switch {
	case e.ValueFrom == nil:
		return e.Value, e.Value != ""
	case e.ValueFrom.SecretKeyRef != nil:
		s, ok := m.secrets[e.ValueFrom.SecretKeyRef.Name]
		if !ok {
			return "", false
		}
		v, ok := s.Data[e.ValueFrom.SecretKeyRef.Key]
		return string(v), ok
	case e.ValueFrom.ConfigMapKeyRef != nil:
		c, ok := m.configMaps[e.ValueFrom.ConfigMapKeyRef.Name]
		if !ok {
			return "", false
		}
		v, ok := c.Data[e.ValueFrom.ConfigMapKeyRef.Key]
		return v, ok
	}
	return "", false
}

// TestK8sBuilds builds every kustomization a user may apply and decodes
// every object strictly; the other tests look into the results.
func TestK8sBuilds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		dir         func(t *testing.T) string
		keda, hpa   bool
		wantSecrets bool
	}{
		{name: "base", dir: func(*testing.T) string { return k8sBase }},
		{name: "demo", dir: func(*testing.T) string { return k8sDemo }, wantSecrets: true},
		{name: "base+keda", dir: func(t *testing.T) string { return withComponents(t, k8sBase, "", kedaComp) }, keda: true},
		{name: "demo+keda", dir: func(t *testing.T) string { return withComponents(t, k8sDemo, demoNamespace, kedaComp) }, keda: true, wantSecrets: true},
		{name: "demo+hpa", dir: func(t *testing.T) string { return withComponents(t, k8sDemo, demoNamespace, hpaComp) }, hpa: true, wantSecrets: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := build(t, tt.dir(t))
			if tt.wantSecrets != (len(m.secrets) > 0) {
				t.Errorf("build has %d Secrets; the base must only reference its Secret, the demo generate it", len(m.secrets))
			}
			checkRoles(t, m, tt.wantSecrets)
			checkServerProbes(t, m)
			checkGracePeriod(t, m)
			checkSecurity(t, m)
			checkResources(t, m)
			checkPDBs(t, m)
			checkServices(t, m)
			if got := len(m.scaled) > 0; got != tt.keda {
				t.Errorf("ScaledObjects present: %v, want %v", got, tt.keda)
			}
			if got := len(m.hpas) > 0; got != tt.hpa {
				t.Errorf("HorizontalPodAutoscalers present: %v, want %v", got, tt.hpa)
			}
			if tt.keda {
				checkKEDA(t, m, tt.wantSecrets)
			}
			if tt.hpa {
				checkHPA(t, m)
			}
			if tt.keda || tt.hpa {
				if d := m.deployments[workerName]; d != nil && d.Spec.Replicas != nil {
					t.Errorf("worker Deployment sets replicas %d although an autoscaler owns them; every apply would reset them", *d.Spec.Replicas)
				}
			}
		})
	}
}

// checkRoles: each role runs its command with migrations first, and gets
// every variable its binary reads, mounted where TIDEMARK_CONFIG points.
func checkRoles(t *testing.T, m *manifests, resolve bool) {
	t.Helper()
	for _, role := range roles {
		d, c := roleDeployment(t, m, role)
		if !slices.Equal(c.Args, []string{role}) || len(c.Command) > 0 {
			t.Errorf("%s: command %q args %q, want the image's entrypoint with args [%s]", d.Name, c.Command, c.Args, role)
		}
		for _, name := range roleEnv[role] {
			e := envVar(c, name)
			if e == nil {
				t.Errorf("%s: %s not set", d.Name, name)
				continue
			}
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && !strings.HasPrefix(e.ValueFrom.SecretKeyRef.Name, secretName) {
				t.Errorf("%s: %s from Secret %q, want %q", d.Name, name, e.ValueFrom.SecretKeyRef.Name, secretName)
			}
			if resolve {
				if v, ok := envValue(m, e); !ok || v == "" {
					t.Errorf("%s: %s does not resolve to a value in this build", d.Name, name)
				}
			}
		}
		if e := envVar(c, "TIDEMARK_CONFIG"); e != nil && e.Value != configPath {
			t.Errorf("%s: TIDEMARK_CONFIG=%q, want %q", d.Name, e.Value, configPath)
		}
		checkConfigMount(t, m, d, c)

		// Migrations: an init container of the same image runs `migrate`
		// with the same database before the role.
		spec := d.Spec.Template.Spec
		i := slices.IndexFunc(spec.InitContainers, func(c corev1.Container) bool { return slices.Equal(c.Args, []string{"migrate"}) })
		if i < 0 {
			t.Errorf("%s: no init container runs `migrate`", d.Name)
			continue
		}
		mc := spec.InitContainers[i]
		if mc.Image != c.Image {
			t.Errorf("%s: migrate image %q, role image %q: migrations must come from the role's binary", d.Name, mc.Image, c.Image)
		}
		if me, re := envVar(&mc, "TIDEMARK_DATABASE_URL"), envVar(c, "TIDEMARK_DATABASE_URL"); me == nil || re == nil || !equalEnv(*me, *re) {
			t.Errorf("%s: migrate and the role see different TIDEMARK_DATABASE_URL", d.Name)
		}
	}
	if d, ok := m.deployments["tidemark-scheduler"]; ok && (d.Spec.Replicas == nil || *d.Spec.Replicas != 2) {
		t.Errorf("scheduler replicas %v, want 2", d.Spec.Replicas)
	}
}

func equalEnv(a, b corev1.EnvVar) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

// checkConfigMount: TIDEMARK_CONFIG is a file of a mounted ConfigMap of the
// build, and that file is a valid config.
func checkConfigMount(t *testing.T, m *manifests, d *appsv1.Deployment, c *corev1.Container) {
	t.Helper()
	dir, file := filepath.Split(configPath)
	dir = filepath.Clean(dir)
	for _, vm := range c.VolumeMounts {
		if filepath.Clean(vm.MountPath) != dir {
			continue
		}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name != vm.Name || v.ConfigMap == nil {
				continue
			}
			cm, ok := m.configMaps[v.ConfigMap.Name]
			if !ok {
				t.Errorf("%s: volume %s names ConfigMap %q, not in the build", d.Name, v.Name, v.ConfigMap.Name)
				return
			}
			// The roles reload the file when the ConfigMap changes: that
			// needs the ConfigMap updated in place (not renamed by a hash
			// of its content, which rolls the pods instead) and a directory
			// mount (a subPath mount never sees an update).
			if vm.SubPath != "" {
				t.Errorf("%s: the config is mounted with subPath %q, which never sees a ConfigMap update", d.Name, vm.SubPath)
			}
			if cm.Name != "tidemark-config" {
				t.Errorf("%s: ConfigMap %q: want it named tidemark-config, updated in place (disableNameSuffixHash)", d.Name, cm.Name)
			}
			data, ok := cm.Data[file]
			if !ok {
				t.Errorf("%s: ConfigMap %s has no key %s", d.Name, cm.Name, file)
				return
			}
			if _, err := config.Parse(cm.Name+"/"+file, []byte(data)); err != nil {
				t.Errorf("%s: the sources file is invalid:\n%v", d.Name, err)
			}
			return
		}
	}
	t.Errorf("%s: nothing mounts a ConfigMap at %s", d.Name, dir)
}

// servedPaths are the GET routes the server package registers (patterns
// such as "GET /healthz" in its non-test sources).
func servedPaths(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("../server/*.go")
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	route := regexp.MustCompile(`"GET (/[^" {]*)"`)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range route.FindAllSubmatch(src, -1) {
			paths = append(paths, string(m[1]))
		}
	}
	if len(paths) == 0 {
		t.Fatal("found no GET routes in server/*.go")
	}
	return paths
}

// containerPort resolves a probe's or Service's port against a container.
func containerPort(c *corev1.Container, p intstr.IntOrString) (int32, bool) {
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

// checkServerProbes: liveness /healthz and readiness /readyz, both routes
// the server registers, on the port it listens on (TIDEMARK_ADDR). The
// scheduler and worker serve nothing, so they must have no HTTP probes.
func checkServerProbes(t *testing.T, m *manifests) {
	t.Helper()
	served := servedPaths(t)
	_, c := roleDeployment(t, m, "server")
	addr := envVar(c, "TIDEMARK_ADDR")
	if addr == nil {
		return // checkRoles reports it
	}
	_, portStr, err := net.SplitHostPort(addr.Value)
	if err != nil {
		t.Fatalf("server TIDEMARK_ADDR %q: %v", addr.Value, err)
	}
	if host, _, _ := net.SplitHostPort(addr.Value); host != "0.0.0.0" && host != "" {
		t.Errorf("server TIDEMARK_ADDR %q: listen on all interfaces, or the kubelet's probes cannot reach it", addr.Value)
	}
	listen, _ := strconv.Atoi(portStr)
	for _, p := range []struct {
		kind  string
		probe *corev1.Probe
		path  string
	}{
		{"liveness", c.LivenessProbe, "/healthz"},
		{"readiness", c.ReadinessProbe, "/readyz"},
	} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("server: no HTTP %s probe", p.kind)
			continue
		}
		g := p.probe.HTTPGet
		if g.Path != p.path || !slices.Contains(served, g.Path) {
			t.Errorf("server %s probe: path %q, want %q (served: %v)", p.kind, g.Path, p.path, served)
		}
		port, ok := containerPort(c, g.Port)
		if !ok || int(port) != listen {
			t.Errorf("server %s probe: port %s resolves to %d (found %v), the server listens on %d", p.kind, g.Port.String(), port, ok, listen)
		}
	}
	// The scheduler and worker serve /healthz on TIDEMARK_METRICS_ADDR
	// (metrics.Serve): liveness only, they take no traffic.
	healthz := healthPaths(t)
	for _, role := range []string{"scheduler", "worker"} {
		_, c := roleDeployment(t, m, role)
		addr := envVar(c, "TIDEMARK_METRICS_ADDR")
		if addr == nil {
			t.Errorf("%s: no TIDEMARK_METRICS_ADDR, so nothing serves its liveness probe", role)
			continue
		}
		_, portStr, err := net.SplitHostPort(addr.Value)
		if err != nil {
			t.Fatalf("%s TIDEMARK_METRICS_ADDR %q: %v", role, addr.Value, err)
		}
		listen, _ := strconv.Atoi(portStr)
		p := c.LivenessProbe
		if p == nil || p.HTTPGet == nil {
			t.Errorf("%s: no HTTP liveness probe", role)
			continue
		}
		if !slices.Contains(healthz, p.HTTPGet.Path) {
			t.Errorf("%s liveness probe: path %q, the health port serves %v", role, p.HTTPGet.Path, healthz)
		}
		if port, ok := containerPort(c, p.HTTPGet.Port); !ok || int(port) != listen {
			t.Errorf("%s liveness probe: port %s resolves to %d, the health port is %d", role, p.HTTPGet.Port.String(), port, listen)
		}
		if c.ReadinessProbe != nil {
			t.Errorf("%s has a readiness probe, but takes no traffic", role)
		}
	}
}

// healthPaths are the GET routes metrics.Serve registers.
func healthPaths(t *testing.T) []string {
	t.Helper()
	src, err := os.ReadFile("../metrics/metrics.go")
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, m := range regexp.MustCompile(`"GET (/[^" {]*)"`).FindAllSubmatch(src, -1) {
		paths = append(paths, string(m[1]))
	}
	return paths
}

// workerShutdown is the shutdown timeout the worker gets: its
// TIDEMARK_SHUTDOWN_TIMEOUT, else the binary's default (read from roles.go).
func workerShutdown(t *testing.T, c *corev1.Container) time.Duration {
	t.Helper()
	if e := envVar(c, "TIDEMARK_SHUTDOWN_TIMEOUT"); e != nil {
		d, err := time.ParseDuration(e.Value)
		if err != nil {
			t.Fatalf("worker TIDEMARK_SHUTDOWN_TIMEOUT=%q: %v", e.Value, err)
		}
		return d
	}
	if slices.ContainsFunc(c.Args, func(a string) bool { return strings.Contains(a, "shutdown-timeout") }) {
		t.Fatalf("worker args %q set --shutdown-timeout; teach this test to read it", c.Args)
	}
	src, err := os.ReadFile("../cmd/tidemark/roles.go")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`"TIDEMARK_SHUTDOWN_TIMEOUT", (\d+) \* time\.Second`).FindSubmatch(src)
	if m == nil {
		t.Fatal("cannot find the default shutdown timeout in cmd/tidemark/roles.go")
	}
	n, _ := strconv.Atoi(string(m[1]))
	return time.Duration(n) * time.Second
}

func checkGracePeriod(t *testing.T, m *manifests) {
	t.Helper()
	d, c := roleDeployment(t, m, "worker")
	shutdown := workerShutdown(t, c)
	g := d.Spec.Template.Spec.TerminationGracePeriodSeconds
	if g == nil {
		t.Errorf("worker terminationGracePeriodSeconds unset (30s), want it set above its shutdown timeout %s", shutdown)
	} else if time.Duration(*g)*time.Second <= shutdown {
		t.Errorf("worker terminationGracePeriodSeconds %d, want more than its shutdown timeout %s", *g, shutdown)
	}
}

// checkSecurity: every pod runs as non-root with the runtime's seccomp
// profile; every container drops all capabilities on a read-only root.
func checkSecurity(t *testing.T, m *manifests) {
	t.Helper()
	for name, tmpl := range m.podSpecs() {
		ps := tmpl.Spec.SecurityContext
		if ps == nil || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot || (ps.RunAsUser != nil && *ps.RunAsUser == 0) {
			t.Errorf("%s: pod securityContext must set runAsNonRoot: true (and no uid 0)", name)
		}
		if ps == nil || ps.SeccompProfile == nil || ps.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s: pod seccompProfile must be RuntimeDefault", name)
		}
		for _, c := range slices.Concat(tmpl.Spec.InitContainers, tmpl.Spec.Containers) {
			cs := c.SecurityContext
			switch {
			case cs == nil:
				t.Errorf("%s/%s: no securityContext", name, c.Name)
			case cs.AllowPrivilegeEscalation == nil || *cs.AllowPrivilegeEscalation:
				t.Errorf("%s/%s: allowPrivilegeEscalation must be false", name, c.Name)
			case cs.ReadOnlyRootFilesystem == nil || !*cs.ReadOnlyRootFilesystem:
				t.Errorf("%s/%s: readOnlyRootFilesystem must be true", name, c.Name)
			case cs.Capabilities == nil || !slices.Equal(cs.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(cs.Capabilities.Add) > 0:
				t.Errorf("%s/%s: capabilities must drop ALL and add none", name, c.Name)
			case cs.Privileged != nil && *cs.Privileged, cs.RunAsUser != nil && *cs.RunAsUser == 0:
				t.Errorf("%s/%s: privileged or root", name, c.Name)
			}
		}
	}
}

// checkResources: every container has CPU and memory requests and limits,
// requests no larger than limits.
func checkResources(t *testing.T, m *manifests) {
	t.Helper()
	for name, tmpl := range m.podSpecs() {
		for _, c := range slices.Concat(tmpl.Spec.InitContainers, tmpl.Spec.Containers) {
			for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				req, okReq := c.Resources.Requests[r]
				lim, okLim := c.Resources.Limits[r]
				if !okReq || !okLim {
					t.Errorf("%s/%s: %s request and limit must both be set", name, c.Name, r)
					continue
				}
				if req.Cmp(lim) > 0 {
					t.Errorf("%s/%s: %s request %s above limit %s", name, c.Name, r, req.String(), lim.String())
				}
			}
		}
	}
}

func selects(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// checkPDBs: every tidemark role has a PodDisruptionBudget, and every budget
// selects the pods of exactly one workload.
func checkPDBs(t *testing.T, m *manifests) {
	t.Helper()
	covered := map[string]bool{}
	for name, p := range m.pdbs {
		if p.Spec.Selector == nil || len(p.Spec.Selector.MatchExpressions) > 0 {
			t.Errorf("PDB %s: want a matchLabels selector", name)
			continue
		}
		var hits []string
		for wl, tmpl := range m.podSpecs() {
			if selects(p.Spec.Selector.MatchLabels, tmpl.Labels) {
				hits = append(hits, wl)
				covered[wl] = true
			}
		}
		if len(hits) != 1 {
			t.Errorf("PDB %s selects %v, want exactly one workload's pods", name, hits)
		}
		if p.Spec.MinAvailable == nil && p.Spec.MaxUnavailable == nil {
			t.Errorf("PDB %s: neither minAvailable nor maxUnavailable", name)
		}
	}
	for _, role := range roles {
		if !covered["Deployment/tidemark-"+role] {
			t.Errorf("no PodDisruptionBudget covers tidemark-%s", role)
		}
	}
}

// checkServices: every Service selects pods of the build and its ports
// resolve to their container ports.
func checkServices(t *testing.T, m *manifests) {
	t.Helper()
	if _, ok := m.services[serverName]; !ok {
		t.Errorf("no Service %s", serverName)
	}
	for name, s := range m.services {
		found := false
		for _, tmpl := range m.podSpecs() {
			if !selects(s.Spec.Selector, tmpl.Labels) {
				continue
			}
			found = true
			for _, sp := range s.Spec.Ports {
				target := sp.TargetPort
				if target.Type == intstr.Int && target.IntVal == 0 {
					target = intstr.FromInt32(sp.Port)
				}
				ok := slices.ContainsFunc(tmpl.Spec.Containers, func(c corev1.Container) bool {
					_, ok := containerPort(&c, target)
					return ok
				})
				if !ok {
					t.Errorf("Service %s port %d: target %s is no container port", name, sp.Port, target.String())
				}
			}
		}
		if !found {
			t.Errorf("Service %s selects no pods of the build", name)
		}
	}
	if s, ok := m.services[serverName]; ok {
		if len(s.Spec.Ports) != 1 || s.Spec.Ports[0].Port != 8080 {
			t.Errorf("Service %s ports %+v, want 8080", serverName, s.Spec.Ports)
		}
	}
}

// checkKEDA: the ScaledObject scales the worker Deployment on the pending
// lists of exactly the queues jobs.AllQueues lists (fetch and probe), and its Redis address is
// the one tidemark uses.
func checkKEDA(t *testing.T, m *manifests, resolve bool) {
	t.Helper()
	if len(m.scaled) != 1 {
		t.Fatalf("%d ScaledObjects, want 1", len(m.scaled))
	}
	pendingList := regexp.MustCompile(`^asynq:\{([^{}]+)\}:pending$`)
	for name, so := range m.scaled {
		ref := so.Spec.ScaleTargetRef
		if ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" || ref.Name != workerName || m.deployments[ref.Name] == nil {
			t.Errorf("ScaledObject %s targets %s %s %q, want the worker Deployment %q of the build", name, ref.APIVersion, ref.Kind, ref.Name, workerName)
		} else if ns := m.deployments[ref.Name].Namespace; so.Metadata.Namespace != ns {
			t.Errorf("ScaledObject %s in namespace %q, the worker in %q: KEDA only scales its own namespace", name, so.Metadata.Namespace, ns)
		}
		if mn, mx := so.Spec.MinReplicaCount, so.Spec.MaxReplicaCount; mn == nil || mx == nil || *mn < 1 || *mx < *mn {
			t.Errorf("ScaledObject %s: replicas min %v max %v; keep at least one worker (scheduled tasks need one to show up in the backlog at all)", name, mn, mx)
		}
		queues := map[string]bool{}
		for _, tr := range so.Spec.Triggers {
			if tr.Type != "redis" {
				t.Errorf("ScaledObject %s: trigger type %q, want redis", name, tr.Type)
				continue
			}
			q := pendingList.FindStringSubmatch(tr.Metadata["listName"])
			if q == nil {
				t.Errorf("ScaledObject %s: listName %q is not an asynq pending list", name, tr.Metadata["listName"])
				continue
			}
			if !slices.Contains(jobs.AllQueues(), q[1]) {
				t.Errorf("ScaledObject %s: queue %q does not exist (jobs.AllQueues)", name, q[1])
			}
			queues[q[1]] = true
			if n, err := strconv.Atoi(tr.Metadata["listLength"]); err != nil || n < 1 {
				t.Errorf("ScaledObject %s: listLength %q, want a positive number", name, tr.Metadata["listLength"])
			}
			if tr.AuthenticationRef == nil {
				t.Errorf("ScaledObject %s: trigger for %s has no authenticationRef", name, q[1])
				continue
			}
			ta, ok := m.triggerAuths[tr.AuthenticationRef.Name]
			if !ok || ta.Metadata.Namespace != so.Metadata.Namespace {
				t.Errorf("ScaledObject %s: TriggerAuthentication %q not in the build, or not in its namespace", name, tr.AuthenticationRef.Name)
				continue
			}
			if resolve {
				checkKEDARedis(t, m, ta, tr.Metadata["databaseIndex"])
			}
		}
		for _, q := range jobs.AllQueues() {
			if !queues[q] {
				t.Errorf("ScaledObject %s: no trigger for queue %q", name, q)
			}
		}
	}
}

// checkKEDARedis: the address KEDA reads is the host:port and database of
// the worker's TIDEMARK_REDIS_URL.
func checkKEDARedis(t *testing.T, m *manifests, ta *triggerAuthentication, db string) {
	t.Helper()
	var addr string
	for _, ref := range ta.Spec.SecretTargetRef {
		s, ok := m.secrets[ref.Name]
		if !ok {
			t.Errorf("TriggerAuthentication %s: Secret %q not in the build", ta.Metadata.Name, ref.Name)
			continue
		}
		v, ok := s.Data[ref.Key]
		if !ok {
			t.Errorf("TriggerAuthentication %s: Secret %s has no key %s", ta.Metadata.Name, ref.Name, ref.Key)
		}
		if ref.Parameter == "address" {
			addr = string(v)
		}
	}
	_, c := roleDeployment(t, m, "worker")
	e := envVar(c, "TIDEMARK_REDIS_URL")
	if e == nil {
		return
	}
	uri, _ := envValue(m, e)
	opt, err := asynq.ParseRedisURI(uri)
	if err != nil {
		t.Errorf("worker TIDEMARK_REDIS_URL %q: %v", uri, err)
		return
	}
	co, ok := opt.(asynq.RedisClientOpt)
	if !ok {
		t.Errorf("worker TIDEMARK_REDIS_URL %q is not a single Redis; KEDA's redis trigger cannot follow it", uri)
		return
	}
	if addr != co.Addr || db != strconv.Itoa(co.DB) {
		t.Errorf("KEDA reads Redis %q db %q, the worker uses %q db %d", addr, db, co.Addr, co.DB)
	}
}

func checkHPA(t *testing.T, m *manifests) {
	t.Helper()
	for name, h := range m.hpas {
		ref := h.Spec.ScaleTargetRef
		if ref.Kind != "Deployment" || ref.Name != workerName || m.deployments[ref.Name] == nil {
			t.Errorf("HPA %s targets %s %q, want the worker Deployment", name, ref.Kind, ref.Name)
		} else if ns := m.deployments[ref.Name].Namespace; h.Namespace != ns {
			t.Errorf("HPA %s in namespace %q, the worker in %q", name, h.Namespace, ns)
		}
		for _, mt := range h.Spec.Metrics {
			if mt.Resource == nil || mt.Resource.Name != corev1.ResourceCPU {
				continue
			}
			_, c := roleDeployment(t, m, "worker")
			if _, ok := c.Resources.Requests[corev1.ResourceCPU]; !ok {
				t.Errorf("HPA %s scales on CPU utilization but the worker requests no CPU", name)
			}
		}
	}
}

// TestK8sDemo: the demo overlay brings everything the roles reach for.
func TestK8sDemo(t *testing.T) {
	t.Parallel()
	m := build(t, k8sDemo)

	// The sources file is examples/demo.yaml, unchanged.
	want, err := os.ReadFile("../examples/demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	d, _ := roleDeployment(t, m, "worker")
	i := slices.IndexFunc(d.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool { return v.ConfigMap != nil })
	if i < 0 {
		t.Fatal("the worker mounts no ConfigMap")
	}
	if cm, ok := m.configMaps[d.Spec.Template.Spec.Volumes[i].ConfigMap.Name]; !ok {
		t.Errorf("no ConfigMap %s", d.Spec.Template.Spec.Volumes[i].ConfigMap.Name)
	} else if cm.Data["tidemark.yaml"] != string(want) {
		t.Error("the demo ConfigMap's tidemark.yaml differs from examples/demo.yaml; copy it to deploy/k8s/overlays/demo/tidemark.yaml")
	}

	// Every URL a role is given points at a Service of the demo, port
	// included.
	for _, role := range roles {
		_, c := roleDeployment(t, m, role)
		for _, name := range []string{"TIDEMARK_DATABASE_URL", "TIDEMARK_REDIS_URL", "DEMO_UPSTREAM_URL"} {
			e := envVar(c, name)
			if e == nil {
				t.Errorf("%s: %s not set", role, name)
				continue
			}
			v, _ := envValue(m, e)
			u, err := url.Parse(v)
			if err != nil {
				t.Errorf("%s: %s: %v", role, name, err)
				continue
			}
			host, port, _ := net.SplitHostPort(u.Host)
			s, ok := m.services[host]
			if !ok || !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return strconv.Itoa(int(p.Port)) == port }) {
				t.Errorf("%s: %s=%s: no Service %q with port %s in the demo", role, name, v, host, port)
			}
		}
		if _, err := asynq.ParseRedisURI(func() string { v, _ := envValue(m, envVar(c, "TIDEMARK_REDIS_URL")); return v }()); err != nil {
			t.Errorf("%s: TIDEMARK_REDIS_URL: %v", role, err)
		}
	}

	// asynq needs Redis never to evict its keys.
	if d, ok := m.deployments["redis"]; !ok {
		t.Error("no redis Deployment")
	} else {
		args := strings.Join(slices.Concat(d.Spec.Template.Spec.Containers[0].Command, d.Spec.Template.Spec.Containers[0].Args), " ")
		if !strings.Contains(args, "--maxmemory-policy noeviction") {
			t.Errorf("redis runs %q, want --maxmemory-policy noeviction", args)
		}
	}

	// Every object lands in the demo namespace, which the overlay creates.
	if _, ok := m.namespaces[demoNamespace]; !ok {
		t.Error("the demo does not create its namespace")
	}
	for name, d := range m.deployments {
		if d.Namespace != demoNamespace {
			t.Errorf("Deployment %s in namespace %q", name, d.Namespace)
		}
	}
}
