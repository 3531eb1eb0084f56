package deploy_test

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestImageBuildCommand runs the Dockerfile's own build command (the image
// itself cannot be built without a Docker engine) and checks that every
// binary it makes is static, as the distroless runtime image needs.
func TestImageBuildCommand(t *testing.T) {
	t.Parallel()
	dockerfile, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.ReplaceAll(string(dockerfile), "\\\n", " ")
	m := regexp.MustCompile(`CGO_ENABLED=0 (go build [^\n]*)`).FindStringSubmatch(joined)
	if m == nil {
		t.Fatal("no `CGO_ENABLED=0 go build` in the Dockerfile")
	}
	out := t.TempDir()
	var pkgs []string
	for _, a := range strings.Fields(m[1]) {
		if strings.HasPrefix(a, "./") {
			pkgs = append(pkgs, filepath.Base(a))
		}
	}
	// The RUN line is shell: run it as the shell would, writing to out.
	cmd := exec.Command("sh", "-c", strings.ReplaceAll(m[0], "/out/", out+"/"))
	cmd.Dir = ".."
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", m[0], err, b)
	}
	if len(pkgs) == 0 {
		t.Fatal("the build command names no packages")
	}
	for _, name := range pkgs {
		f, err := elf.Open(filepath.Join(out, name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("%s is dynamically linked (has an ELF interpreter)", name)
			}
		}
		if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
			t.Errorf("%s needs shared libraries %v", name, libs)
		}
		f.Close()
	}
}
