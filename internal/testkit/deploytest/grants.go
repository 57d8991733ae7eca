package deploytest

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/mriot/mriot/internal/emulator/policy"
)

// Call is one AWS API call a function makes: the IAM action it needs and an
// example resource ARN it acts on.
type Call struct {
	Action   string
	Resource string
}

// SubVars are the values Allows gives the ${...} variables of Fn::Sub
// resource strings (the pseudo parameters and the template's parameters).
var SubVars = map[string]string{
	"AWS::Partition": "aws",
	"AWS::Region":    "eu-west-1",
	"AWS::AccountId": "123456789012",
	"Application":    "mriot",
}

// RoleOf returns the logical id of the IAM role of a Lambda function
// ({"Fn::GetAtt": [Role, "Arn"]}), "" when it has none in the template.
func RoleOf(t Template, fn string) string {
	role, _ := t.Resources[fn].Properties["Role"].(map[string]any)
	switch g := role["Fn::GetAtt"].(type) {
	case []any:
		if len(g) == 2 {
			id, _ := g[0].(string)
			return id
		}
	case string:
		id, _, _ := strings.Cut(g, ".")
		return id
	}
	return ""
}

// Allows reports whether an Allow statement of the role grants c.Action on
// c.Resource. Resources given as Fn::Sub strings are expanded with SubVars;
// any other intrinsic function matches nothing. Deny statements are not
// considered (the template has none).
func Allows(t Template, role string, c Call) bool {
	for _, st := range Statements(t) {
		if st.Effect != "Allow" || !strings.HasPrefix(st.Where, role+"/") {
			continue
		}
		if !matchAny(st.Actions, c.Action, false) {
			continue
		}
		for _, r := range st.Resource {
			if s, ok := resourceString(r); ok && globMatch(s, c.Resource, true) {
				return true
			}
		}
	}
	return false
}

// CheckGrants reports every call of a function that its role does not allow.
func CheckGrants(t Template, calls map[string][]Call) []string {
	var problems []string
	for _, fn := range sortedKeys(calls) {
		role := RoleOf(t, fn)
		if role == "" {
			problems = append(problems, fmt.Sprintf("%s: no role in the template", fn))
			continue
		}
		for _, c := range calls[fn] {
			if !Allows(t, role, c) {
				problems = append(problems, fmt.Sprintf("%s: %s does not allow %s on %s", fn, role, c.Action, c.Resource))
			}
		}
	}
	return problems
}

// CheckUnusedGrants reports every action and resource of a function's own
// policy statements (the Policies of its AWS::Serverless::Function, which
// SAM names <Function>RolePolicy<N>) that none of its calls needs: a grant
// beyond what the code calls. Statements SAM adds (destinations, schedules)
// are not checked. A resource that is not a string or a resolvable Fn::Sub
// is reported too: nothing can be said of it.
func CheckUnusedGrants(t Template, calls map[string][]Call) []string {
	var problems []string
	for _, fn := range sortedKeys(calls) {
		role := RoleOf(t, fn)
		if role == "" {
			continue // CheckGrants reports it
		}
		for _, st := range Statements(t) {
			if st.Effect != "Allow" || !strings.HasPrefix(st.Where, role+"/") || !strings.Contains(st.Where, ":"+fn+"RolePolicy") {
				continue
			}
			for _, a := range st.Actions {
				for _, r := range st.Resource {
					res, ok := resourceString(r)
					if !ok {
						problems = append(problems, fmt.Sprintf("%s: %s grants %s on %v, a resource the check cannot resolve", fn, st.Where, a, r))
						continue
					}
					used := false
					for _, c := range calls[fn] {
						if globMatch(a, c.Action, false) && globMatch(res, c.Resource, true) {
							used = true
							break
						}
					}
					if !used {
						problems = append(problems, fmt.Sprintf("%s: %s grants %s on %s, which no call of its code needs", fn, st.Where, a, res))
					}
				}
			}
		}
	}
	return problems
}

var subVar = regexp.MustCompile(`\$\{([^}!]+)\}`)

func resourceString(r any) (string, bool) {
	switch x := r.(type) {
	case string:
		return x, true
	case map[string]any:
		s, ok := x["Fn::Sub"].(string)
		if !ok {
			return "", false
		}
		unknown := false
		out := subVar.ReplaceAllStringFunc(s, func(m string) string {
			v, ok := SubVars[m[2:len(m)-1]]
			if !ok {
				unknown = true
			}
			return v
		})
		return out, !unknown
	}
	return "", false
}

func matchAny(patterns []string, s string, caseSensitive bool) bool {
	for _, p := range patterns {
		if globMatch(p, s, caseSensitive) {
			return true
		}
	}
	return false
}

// globMatch matches s against an IAM pattern with policy.Match: * is any
// run of characters (across "/" and ":"), ? one character. Actions compare
// case-insensitively (caseSensitive false), resources case-sensitively.
func globMatch(pattern, s string, caseSensitive bool) bool {
	if !caseSensitive {
		pattern, s = strings.ToLower(pattern), strings.ToLower(s)
	}
	return policy.Match(pattern, s)
}
