package deploytest

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/mriot/mriot/internal/emulator/policy"
)

// TestDevicePolicyIsTheLocalOne: the device policy template.yaml deploys
// allows exactly what the local endpoint's device policy
// (policy.DevicePolicy) allows, for the application mriot: the same
// actions on the same resources, Basic Ingest's data rule topic included.
// Local tests of what a device may do then say what a deployed device may.
func TestDevicePolicyIsTheLocalOne(t *testing.T) {
	const region, account = "eu-west-1", "123456789012"
	subst := strings.NewReplacer("${AWS::Partition}", "aws", "${AWS::Region}", region, "${AWS::AccountId}", account,
		"${DataRule}", policy.DataRuleName, "${!", "${")
	for tpl, tr := range translate(t) {
		doc, _ := prop(tr.Template.Resources["DevicePolicy"], "PolicyDocument").(map[string]any)
		stmts, _ := doc["Statement"].([]any)
		deployed := map[string]bool{}
		for _, s := range stmts {
			st, _ := s.(map[string]any)
			if st["Effect"] != "Allow" {
				t.Errorf("%s: a device policy statement that is not Allow: %v", tpl, st)
			}
			res := st["Resource"]
			if _, one := res.(map[string]any); one {
				res = []any{res}
			}
			list, _ := res.([]any)
			for _, r := range list {
				sub, _ := r.(map[string]any)["Fn::Sub"].(string)
				if sub == "" {
					t.Errorf("%s: a device policy resource that is not a Fn::Sub string: %v", tpl, r)
					continue
				}
				deployed[st["Action"].(string)+" "+subst.Replace(sub)] = true
			}
		}
		var local struct {
			Statement []struct{ Action, Resource string }
		}
		if err := json.Unmarshal([]byte(policy.DevicePolicy(region, account)), &local); err != nil {
			t.Fatal(err)
		}
		want := map[string]bool{}
		for _, st := range local.Statement {
			want[st.Action+" "+st.Resource] = true
		}
		if !maps.Equal(deployed, want) {
			t.Errorf("%s: the deployed device policy allows\n  %s\nthe local one\n  %s", tpl,
				strings.Join(slices.Sorted(maps.Keys(deployed)), "\n  "), strings.Join(slices.Sorted(maps.Keys(want)), "\n  "))
		}
	}
}
