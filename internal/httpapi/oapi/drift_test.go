package oapi_test

import (
	"bytes"
	"os"
	"os/exec"
	"testing"

	"github.com/diamondd/diamondd/internal/httpapi/oapi"
)

// The committed code must be what oapi-codegen makes of the committed spec:
// edit openapi/openapi.yaml, then run `go generate ./internal/httpapi/oapi`.
func TestGeneratedCodeMatchesSpec(t *testing.T) {
	if testing.Short() {
		t.Skip("builds oapi-codegen")
	}
	// Read the inputs here so that go test's cache notices when they change.
	for _, f := range []string{"cfg.yaml", "../../../openapi/openapi.yaml"} {
		if _, err := os.ReadFile(f); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("go", "tool", "oapi-codegen", "-config", "cfg.yaml", "../../../openapi/openapi.yaml")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	want, err := cmd.Output()
	if err != nil {
		t.Fatalf("oapi-codegen: %v\n%s", err, stderr.String())
	}
	got, err := os.ReadFile("oapi.gen.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bytes.TrimSpace(got), bytes.TrimSpace(want)) {
		t.Fatal("internal/httpapi/oapi/oapi.gen.go is stale: run `go generate ./internal/httpapi/oapi` and commit the result")
	}
}

// The embedded spec is the file: what the validator enforces is what
// clients read.
func TestEmbeddedSpecLoads(t *testing.T) {
	spec, err := oapi.GetSwagger()
	if err != nil {
		t.Fatal(err)
	}
	if err := spec.Validate(t.Context()); err != nil {
		t.Fatalf("spec is invalid: %v", err)
	}
}
