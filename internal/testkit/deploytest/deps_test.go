package deploytest

import (
	"os/exec"
	"strings"
	"testing"
)

// shipped are the module's package trees a Lambda may link: its own main,
// the shared vocabulary, the workflows and the AWS adapters.
var shipped = []string{"functions/", "internal/core/", "internal/workflow/", "internal/aws/"}

// forbidden are standard-library packages that only tests need.
var forbidden = []string{"testing", "net/http/httptest", "testing/", "internal/fuzz"}

// TestLambdaBinariesLinkNoTestCode lists what every function under
// functions/ links and fails on test support, fakes, contract suites, the
// PKI toolkit or the local emulator: none of them may reach a Lambda.
func TestLambdaBinariesLinkNoTestCode(t *testing.T) {
	const module = "github.com/mriot/mriot/"
	cmd := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}} {{.Standard}}", "./functions/...")
	cmd.Dir = root(t)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	var mine int
	for line := range strings.Lines(string(out)) {
		path, std, _ := strings.Cut(strings.TrimSpace(line), " ")
		if std == "true" {
			for _, f := range forbidden {
				if path == f || (strings.HasSuffix(f, "/") && strings.HasPrefix(path, f)) {
					t.Errorf("a Lambda links %s", path)
				}
			}
			continue
		}
		rel, ok := strings.CutPrefix(path, module)
		if !ok {
			continue // a dependency module: go.mod and the license check own them
		}
		mine++
		if !hasAnyPrefix(rel, shipped) {
			t.Errorf("a Lambda links %s, which is not under %v", rel, shipped)
		}
	}
	if mine < 6 {
		t.Fatalf("go list found %d packages of this module under functions/; the check saw nothing:\n%s", mine, out)
	}
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}
