package policy

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/mriot/mriot/internal/core/fleet"
)

const (
	region  = "eu-west-1"
	account = "123456789012"
)

func arn(kind, name string) string { return ResourceARN(region, account, kind, name) }

func thingVars(thing string) Vars {
	return Vars{VarThingName: thing, VarIsAttached: "true", VarClientID: thing, VarCommonName: thing}
}

func TestDevicePolicy(t *testing.T) {
	doc := DevicePolicy(region, account)
	if _, err := Parse(doc); err != nil {
		t.Fatalf("DevicePolicy does not parse: %v\n%s", err, doc)
	}
	docs := []string{doc}
	noThing := Vars{VarClientID: "dev1", VarCommonName: "dev1", VarIsAttached: "false"}
	tests := []struct {
		name     string
		action   string
		resource string
		vars     Vars
		want     bool
	}{
		{"connect as own thing", ActionConnect, arn("client", "dev1"), thingVars("dev1"), true},
		{"connect as another client id", ActionConnect, arn("client", "dev2"), thingVars("dev1"), false},
		{"connect without attached thing", ActionConnect, arn("client", "dev1"), noThing, false},
		{"connect in another region", ActionConnect, ResourceARN("us-west-2", account, "client", "dev1"), thingVars("dev1"), false},
		{"connect in another account", ActionConnect, ResourceARN(region, "999999999999", "client", "dev1"), thingVars("dev1"), false},
		{"publish own telemetry", ActionPublish, arn("topic", "i/dev1/m"), thingVars("dev1"), true},
		{"publish own nested topic", ActionPublish, arn("topic", "i/dev1/a/b/c"), thingVars("dev1"), true},
		{"publish another device's topic", ActionPublish, arn("topic", "i/dev2/m"), thingVars("dev1"), false},
		{"publish thing-name prefix trick", ActionPublish, arn("topic", "i/dev10/m"), thingVars("dev1"), false},
		{"publish to the bare prefix", ActionPublish, arn("topic", "i/dev1"), thingVars("dev1"), false},
		{"publish to events topic", ActionPublish, arn("topic", "e/dev1/cmd"), thingVars("dev1"), false},
		{"publish to reserved topic", ActionPublish, arn("topic", "$aws/events/certificates/registered/x"), thingVars("dev1"), false},
		{"publish without thing", ActionPublish, arn("topic", "i/dev1/m"), noThing, false},
		{"subscribe own filter", ActionSubscribe, arn("topicfilter", "e/dev1/#"), thingVars("dev1"), true},
		{"subscribe own exact", ActionSubscribe, arn("topicfilter", "e/dev1/cmd"), thingVars("dev1"), true},
		{"subscribe all events", ActionSubscribe, arn("topicfilter", "e/#"), thingVars("dev1"), false},
		{"subscribe another device", ActionSubscribe, arn("topicfilter", "e/dev2/#"), thingVars("dev1"), false},
		{"subscribe uses topicfilter, not topic", ActionSubscribe, arn("topic", "e/dev1/cmd"), thingVars("dev1"), false},
		{"receive own", ActionReceive, arn("topic", "e/dev1/cmd"), thingVars("dev1"), true},
		{"receive another device", ActionReceive, arn("topic", "e/dev2/cmd"), thingVars("dev1"), false},
		{"unknown action", "iot:DeleteThing", arn("client", "dev1"), thingVars("dev1"), false},
		{"action case-insensitive", "IOT:CONNECT", arn("client", "dev1"), thingVars("dev1"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Allowed(docs, tt.action, tt.resource, tt.vars)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("Allowed(%s, %s) = %v, want %v", tt.action, tt.resource, got, tt.want)
			}
		})
	}
}

func TestAllowed(t *testing.T) {
	allowAll := `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"iot:*","Resource":"*"}}`
	denyDev2 := `{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":["iot:Publish","iot:Receive"],"Resource":"arn:aws:iot:*:*:topic/i/dev2/*"}]}`
	byCN := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:eu-west-1:123456789012:client/${iot:Certificate.Subject.CommonName}-?"}]}`
	byClientID := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Publish","Resource":"arn:aws:iot:eu-west-1:123456789012:topic/c/${iot:ClientId}"}]}`
	attached := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:eu-west-1:123456789012:client/${iot:Connection.Thing.IsAttached}"}]}`
	unknownVar := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Connect","Resource":["arn:aws:iot:eu-west-1:123456789012:client/${iot:Nope}","arn:aws:iot:eu-west-1:123456789012:client/x"]}]}`
	denyUnknownVar := `{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"iot:Connect","Resource":"arn:aws:iot:eu-west-1:123456789012:client/${iot:Nope}"}]}`
	oldVersion := `{"Version":"2008-10-17","Statement":[{"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:eu-west-1:123456789012:client/${iot:ClientId}"}]}`
	escapes := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Publish","Resource":"arn:aws:iot:eu-west-1:123456789012:topic/a${*}b${?}c${$}"}]}`
	wildAction := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*scribe","Resource":"*"}]}`
	unclosed := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:eu-west-1:123456789012:client/${x"}]}`
	v := thingVars("dev1")
	tests := []struct {
		name     string
		docs     []string
		action   string
		resource string
		vars     Vars
		want     bool
	}{
		{"no documents deny", nil, ActionConnect, arn("client", "dev1"), v, false},
		{"allow all", []string{allowAll}, ActionPublish, arn("topic", "anything/at/all"), v, true},
		{"explicit deny wins over allow", []string{allowAll, denyDev2}, ActionPublish, arn("topic", "i/dev2/m"), v, false},
		{"deny order does not matter", []string{denyDev2, allowAll}, ActionReceive, arn("topic", "i/dev2/x"), v, false},
		{"deny only where it matches", []string{denyDev2, allowAll}, ActionPublish, arn("topic", "i/dev1/m"), v, true},
		{"deny alone is no allow", []string{denyDev2}, ActionPublish, arn("topic", "i/dev1/m"), v, false},
		{"common name and ? wildcard", []string{byCN}, ActionConnect, arn("client", "dev1-a"), v, true},
		{"? is exactly one", []string{byCN}, ActionConnect, arn("client", "dev1-ab"), v, false},
		{"? is not zero", []string{byCN}, ActionConnect, arn("client", "dev1-"), v, false},
		{"client id variable", []string{byClientID}, ActionPublish, arn("topic", "c/dev1"), v, true},
		{"client id variable is literal", []string{byClientID}, ActionPublish, arn("topic", "c/dev1x"), Vars{VarClientID: "dev1*"}, false},
		{"is attached true", []string{attached}, ActionConnect, arn("client", "true"), v, true},
		{"is attached false", []string{attached}, ActionConnect, arn("client", "true"), Vars{VarIsAttached: "false"}, false},
		{"unknown variable skips only that resource", []string{unknownVar}, ActionConnect, arn("client", "x"), v, true},
		{"unknown variable matches nothing", []string{unknownVar}, ActionConnect, arn("client", "${iot:Nope}"), v, false},
		{"deny with unset variable does not apply", []string{allowAll, denyUnknownVar}, ActionConnect, arn("client", "dev1"), v, true},
		{"no variables before 2012-10-17", []string{oldVersion}, ActionConnect, arn("client", "dev1"), v, false},
		{"old version takes ${} literally", []string{oldVersion}, ActionConnect, arn("client", "${iot:ClientId}"), v, true},
		{"escapes are literal", []string{escapes}, ActionPublish, arn("topic", "a*b?c$"), v, true},
		{"escaped star is no wildcard", []string{escapes}, ActionPublish, arn("topic", "axxb?c$"), v, false},
		{"wildcard action", []string{wildAction}, ActionSubscribe, arn("topicfilter", "x"), v, true},
		{"wildcard action does not overmatch", []string{wildAction}, ActionPublish, arn("topic", "x"), v, false},
		{"unclosed ${ is literal", []string{unclosed}, ActionConnect, arn("client", "${x"), v, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Allowed(tt.docs, tt.action, tt.resource, tt.vars)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct{ name, doc string }{
		{"not json", `{`},
		{"no statement", `{"Version":"2012-10-17"}`},
		{"empty statement list", `{"Version":"2012-10-17","Statement":[]}`},
		{"bad effect", `{"Version":"2012-10-17","Statement":[{"Effect":"allow","Action":"iot:*","Resource":"*"}]}`},
		{"no action", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Resource":"*"}]}`},
		{"no resource", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*"}]}`},
		{"empty action", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":[""],"Resource":"*"}]}`},
		{"action number", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":7,"Resource":"*"}]}`},
		{"condition", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*","Condition":{"Bool":{"iot:Connection.Thing.IsAttached":"true"}}}]}`},
		{"not action", `{"Version":"2012-10-17","Statement":[{"Effect":"Deny","NotAction":"iot:Connect","Action":"iot:*","Resource":"*"}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.doc)
			if !errors.Is(err, fleet.ErrInvalid) {
				t.Fatalf("Parse error = %v, want ErrInvalid", err)
			}
			ok, err := Allowed([]string{tt.doc}, ActionConnect, arn("client", "x"), nil)
			if err == nil || ok {
				t.Fatalf("Allowed on a bad document = %v, %v; want false and an error", ok, err)
			}
		})
	}
}

func TestMatch(t *testing.T) {
	tests := []struct {
		pattern, s string
		want       bool
	}{
		{"*", "", true},
		{"*", "a/b/c", true},
		{"", "", true},
		{"", "a", false},
		{"a*c", "abbbc", true},
		{"a*c", "abbb", false},
		{"a?c", "abc", true},
		{"a?c", "ac", false},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "axxcyyb", false},
		{"topic/i/*", "topic/i/x/y", true},
		{"?", "é", true},
		{"**a", "a", true},
		{"a+#", "a+#", true},
		{"a+", "ab", false},
		// IAM's * and ? cross "/" and ":" (path.Match's do not).
		{"a?c", "a/c", true},
		{"a?c", "a:c", true},
		{"table/?", "table/ab", false},
		{"table/*", "table/t/index/CertificateIndex", true},
		{"arn:aws:iot:*:123456789012:thing/*", "arn:aws:iot:eu-west-1:123456789012:thing/a/b", true},
		{"arn:aws:iot:*:123456789012:thing/*", "arn:aws:iot:eu-west-1:210987654321:thing/a", false},
		{"*/index/*", "table/t", false},
		{"a?", "a?", true},   // a literal ? in the string is one character
		{"A*", "abc", false}, // case-sensitive
	}
	for _, tt := range tests {
		if got := Match(tt.pattern, tt.s); got != tt.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tt.pattern, tt.s, got, tt.want)
		}
	}
}

// globRegexp is the reference semantics of Match.
func globRegexp(pattern string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString(`(?s)^`)
	for _, r := range pattern {
		switch r {
		case '*':
			b.WriteString(`.*`)
		case '?':
			b.WriteString(`.`)
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	b.WriteString(`$`)
	return regexp.MustCompile(b.String())
}

func FuzzMatch(f *testing.F) {
	f.Add("a*b?c", "aXXbYc")
	f.Add("*/*", "x/y")
	f.Add("??*", "é")
	f.Fuzz(func(t *testing.T, pattern, s string) {
		if len(pattern) > 64 || len(s) > 64 || !utf8Valid(pattern) || !utf8Valid(s) {
			return
		}
		if got, want := Match(pattern, s), globRegexp(pattern).MatchString(s); got != want {
			t.Fatalf("Match(%q, %q) = %v, regexp says %v", pattern, s, got, want)
		}
	})
}

func utf8Valid(s string) bool { return strings.ToValidUTF8(s, "") == s }

func FuzzParse(f *testing.F) {
	f.Add(DevicePolicy(region, account), "iot:Publish", arn("topic", "i/dev1/m"), "dev1")
	f.Add(`{"Version":"2012-10-17","Statement":{"Effect":"Deny","Action":"iot:*","Resource":"${iot:ClientId}*"}}`, "iot:Connect", "x", "y")
	f.Add(`{"Statement":[{"Effect":"Allow","Action":["iot:*"],"Resource":["${"]}]}`, "iot:Connect", "${", "")
	f.Add(`[]`, "", "", "")
	f.Fuzz(func(t *testing.T, doc, action, resource, thing string) {
		d, err := Parse(doc)
		if err != nil {
			if !errors.Is(err, fleet.ErrInvalid) {
				t.Fatalf("Parse error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		vars := thingVars(thing)
		dec := d.Evaluate(action, resource, vars)
		ok, err := Allowed([]string{doc}, action, resource, vars)
		if err != nil {
			t.Fatalf("Allowed failed on a document Parse accepts: %v", err)
		}
		if ok != (dec == DecisionAllow) {
			t.Fatalf("Allowed = %v but Evaluate = %v", ok, dec)
		}
		// An explicit deny added to any document always wins.
		deny := `{"Version":"2012-10-17","Statement":{"Effect":"Deny","Action":"*","Resource":"*"}}`
		if ok, err := Allowed([]string{doc, deny}, action, resource, vars); err != nil || ok {
			t.Fatalf("explicit deny did not win: %v, %v", ok, err)
		}
	})
}
