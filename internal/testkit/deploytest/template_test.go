package deploytest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/aws/ddbitem"
	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/testkit/tier"
	"github.com/mriot/mriot/internal/workflow/reconcile"
)

// root is the repository root (the directory of go.mod).
func root(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test directory")
		}
		dir = parent
	}
}

func TestCfnLint(t *testing.T) {
	lint := tier.Tool(t, "cfn-lint")
	dir := root(t)
	for _, tpl := range Templates {
		t.Run(tpl, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, lint, "--format", "parseable", "--", tpl)
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("cfn-lint %s: %v\n%s", tpl, err, out)
			}
		})
	}
}

var (
	translateOnce sync.Once
	translated    map[string]Translated
	translateErr  error
	translateSkip string
)

// translate runs the SAM transform (aws-sam-translator) on every template
// once per test binary.
func translate(t *testing.T) map[string]Translated {
	t.Helper()
	dir := root(t)
	translateOnce.Do(func() {
		python, err := exec.LookPath("python3")
		if err != nil {
			translateSkip = "python3 not installed"
			return
		}
		translated = map[string]Translated{}
		for _, tpl := range Templates {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			cmd := exec.CommandContext(ctx, python, filepath.Join("scripts", "sam-translate.py"), tpl)
			cmd.Dir = dir
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			cancel()
			var exit *exec.ExitError
			if errors.As(err, &exit) && exit.ExitCode() == 3 {
				translateSkip = "aws-sam-translator or cfn-lint not importable: " + stderr.String()
				return
			}
			if err != nil {
				translateErr = errors.New("SAM transform of " + tpl + ": " + err.Error() + "\n" + stderr.String())
				return
			}
			tr, err := ParseTranslated(out)
			if err != nil {
				translateErr = err
				return
			}
			translated[tpl] = tr
		}
	})
	if translateSkip != "" {
		tier.Require(t, "%s", translateSkip)
	}
	if translateErr != nil {
		t.Fatal(translateErr)
	}
	return translated
}

// functions are the template's Lambda functions.
var functions = []string{"JitrFunction", "ReplicateFunction", "ReconcileFunction", "IngestFunction", "ApiFunction", "SetupFunction", "PresenceFunction"}

func TestSAMTransform(t *testing.T) {
	for tpl, tr := range translate(t) {
		for _, want := range functions {
			if tr.Template.Resources[want].Type != "AWS::Lambda::Function" {
				t.Errorf("%s: transformed template has no function %s", tpl, want)
			}
		}
	}
}

func TestLeastPrivilege(t *testing.T) {
	for tpl, tr := range translate(t) {
		if n := len(Statements(tr.Template)); n < 10 {
			t.Fatalf("%s: found only %d IAM statements; the walker misses policies", tpl, n)
		}
		for _, p := range CheckLeastPrivilege(tr.Template, tr.ResourceTypes) {
			t.Errorf("%s: %s", tpl, p)
		}
	}
}

func TestFunctionsRuntime(t *testing.T) {
	for tpl, tr := range translate(t) {
		for _, p := range CheckFunctions(tr.Template) {
			t.Errorf("%s: %s", tpl, p)
		}
	}
}

func TestRuleInvokedFunctionsKeepFailures(t *testing.T) {
	for tpl, tr := range translate(t) {
		got := sortedKeys(RuleInvoked(tr.Template))
		want := []string{"CommandsFunction", "IngestFunction", "JitrFunction", "PresenceFunction", "ReconcileFunction", "ReplicateFunction"}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: rule-invoked functions = %v, want %v", tpl, got, want)
		}
		for _, p := range CheckDestinations(tr.Template) {
			t.Errorf("%s: %s", tpl, p)
		}
	}
}

// TestRules pins the rule SQL and checks that IoT may invoke a function
// only from its own rule.
func TestRules(t *testing.T) {
	wantSQL := map[string]string{
		"JitrRule": "SELECT * FROM '$aws/events/certificates/registered/#'",
		"DataRule": "SELECT message, topic(2) AS device, timestamp() AS ts, newuuid() AS id FROM 'i/+/m'",
		// AWS IoT's lifecycle events, as is (internal/workflow/presence).
		"PresenceRule": "SELECT * FROM '$aws/events/presence/+/+'",
		// A device's acknowledgement of a command (internal/workflow/commands).
		"AckRule": "SELECT topic(2) AS thingName, topic(4) AS commandId, timestamp() AS ts, result FROM 'i/+/ack/+'",
	}
	for tpl, tr := range translate(t) {
		res := tr.Template.Resources
		for rule, sql := range wantSQL {
			payload, _ := res[rule].Properties["TopicRulePayload"].(map[string]any)
			if payload["Sql"] != sql {
				t.Errorf("%s: %s SQL = %v, want %q", tpl, rule, payload["Sql"], sql)
			}
		}
		iotPerms := 0
		for _, id := range sortedKeys(res) {
			r := res[id]
			if r.Type != "AWS::Lambda::Permission" || r.Properties["Principal"] != "iot.amazonaws.com" {
				continue
			}
			iotPerms++
			src, _ := r.Properties["SourceArn"].(map[string]any)
			ga, _ := src["Fn::GetAtt"].([]any)
			if len(ga) != 2 || res[ga[0].(string)].Type != "AWS::IoT::TopicRule" {
				t.Errorf("%s: %s lets iot.amazonaws.com invoke without a SourceArn of a rule: %v", tpl, id, r.Properties["SourceArn"])
			}
		}
		if iotPerms != len(wantSQL) {
			t.Errorf("%s: %d Lambda permissions for iot.amazonaws.com, want %d (one per rule)", tpl, iotPerms, len(wantSQL))
		}
	}
}

// TestEveryQueueHasAnAlarm: a message in any dead-letter queue pages.
func TestEveryQueueHasAnAlarm(t *testing.T) {
	for tpl, tr := range translate(t) {
		res := tr.Template.Resources
		alarmed := map[string]bool{}
		for _, r := range res {
			if r.Type != "AWS::CloudWatch::Alarm" || r.Properties["MetricName"] != "ApproximateNumberOfMessagesVisible" {
				continue
			}
			dims, _ := r.Properties["Dimensions"].([]any)
			for _, d := range dims {
				dm, _ := d.(map[string]any)
				v, _ := dm["Value"].(map[string]any)
				if ga, ok := v["Fn::GetAtt"].([]any); ok && len(ga) == 2 {
					alarmed[ga[0].(string)] = true
				}
			}
		}
		for _, id := range sortedKeys(res) {
			if res[id].Type == "AWS::SQS::Queue" && !alarmed[id] {
				t.Errorf("%s: queue %s has no depth alarm", tpl, id)
			}
		}
	}
}

// TestAlarmTopicTakesAlarms: CloudWatch alarms can publish to the alarm
// topic. Under the AWS-managed alias/aws/sns key they cannot (its key policy
// does not let cloudwatch.amazonaws.com use it and cannot be changed), and
// no notification is ever delivered.
func TestAlarmTopicTakesAlarms(t *testing.T) {
	for tpl, tr := range translate(t) {
		for _, p := range CheckAlarmTopicKey(tr.Template, "AlarmTopic") {
			t.Errorf("%s: %s", tpl, p)
		}
		if k := tr.Template.Resources[refOrGetAtt(tr.Template.Resources["AlarmTopic"].Properties["KmsMasterKeyId"])]; k.Type == "AWS::KMS::Key" {
			if prop(k, "EnableKeyRotation") != true {
				t.Errorf("%s: the alarm topic's key does not rotate", tpl)
			}
		}
		for _, id := range sortedKeys(tr.Template.Resources) {
			r := tr.Template.Resources[id]
			if r.Type != "AWS::CloudWatch::Alarm" {
				continue
			}
			alarm, _ := r.Properties["AlarmActions"].([]any)
			ok, _ := r.Properties["OKActions"].([]any)
			if len(alarm) == 0 {
				t.Errorf("%s: alarm %s notifies no one", tpl, id)
			}
			for _, a := range append(alarm, ok...) {
				if refOrGetAtt(a) != "AlarmTopic" {
					t.Errorf("%s: alarm %s notifies %v, not the AlarmTopic", tpl, id, a)
				}
			}
		}
	}
}

// TestEnvFileMatchesTemplate: events/env.json sets every variable the
// template gives each function (beyond the ones Lambda sets), and no other.
func TestEnvFileMatchesTemplate(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(root(t), "events", "env.json"))
	if err != nil {
		t.Fatal(err)
	}
	var file map[string]map[string]string
	if err := json.Unmarshal(b, &file); err != nil {
		t.Fatalf("events/env.json: %v", err)
	}
	for tpl, tr := range translate(t) {
		for _, fn := range functions {
			env, _ := tr.Template.Resources[fn].Properties["Environment"].(map[string]any)
			vars, _ := env["Variables"].(map[string]any)
			want := sortedKeys(vars)
			got := sortedKeys(file[fn])
			if !slices.Equal(got, want) {
				t.Errorf("%s: %s variables: events/env.json has %v, the template %v", tpl, fn, got, want)
			}
		}
	}
}

// TestFunctionsDeclareEndpointURL: every function declares
// AWS_ENDPOINT_URL, empty (the SDK reads an empty value as unset: AWS), so
// that `sam local invoke --env-vars events/env.json` can point it at a
// local endpoint: --env-vars only overrides the variables the template
// declares, and silently drops the others, leaving the function on real AWS
// with the caller's credentials. Every function entry of events/env.json
// names a function of the template (SAM ignores the others).
func TestFunctionsDeclareEndpointURL(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(root(t), "events", "env.json"))
	if err != nil {
		t.Fatal(err)
	}
	var file map[string]map[string]any
	if err := json.Unmarshal(b, &file); err != nil {
		t.Fatalf("events/env.json: %v", err)
	}
	for tpl, tr := range translate(t) {
		for _, id := range sortedKeys(tr.Template.Resources) {
			if tr.Template.Resources[id].Type != "AWS::Lambda::Function" {
				continue
			}
			vars, _ := prop(tr.Template.Resources[id], "Environment", "Variables").(map[string]any)
			if v, ok := vars["AWS_ENDPOINT_URL"]; !ok || v != "" {
				t.Errorf("%s: %s declares AWS_ENDPOINT_URL = %v (declared: %v), want it declared and empty", tpl, id, v, ok)
			}
			if _, ok := file[id]["AWS_ENDPOINT_URL"]; !ok {
				t.Errorf("events/env.json: %s does not show AWS_ENDPOINT_URL, the variable to set for a local endpoint", id)
			}
		}
		for fn, vars := range file {
			r := tr.Template.Resources[fn]
			if fn == "Parameters" {
				continue
			}
			if r.Type != "AWS::Lambda::Function" {
				t.Errorf("events/env.json: %s is not a function of %s", fn, tpl)
				continue
			}
			declared, _ := prop(r, "Environment", "Variables").(map[string]any)
			for v := range vars {
				if _, ok := declared[v]; !ok {
					t.Errorf("events/env.json: %s.%s is not declared by the template, so --env-vars ignores it", fn, v)
				}
			}
		}
	}
}

// The checks themselves must catch what they are for.
func TestChecksCatchBadTemplates(t *testing.T) {
	types := map[string][]string{
		"iot:DescribeThing":        {"thing"},
		"iot:RegisterCertificate":  {},
		"iot:ListAttachedPolicies": {},
	}
	role := func(stmt string) string {
		return `{"Resources":{"R":{"Type":"AWS::IAM::Role","Properties":{"Policies":[{"PolicyName":"p","PolicyDocument":{"Statement":[` + stmt + `]}}]}}}}`
	}
	fn := func(props string) string {
		return `{"Resources":{"F":{"Type":"AWS::Lambda::Function","Properties":` + props + `}}}`
	}
	good := `{"Runtime":"provided.al2023","Architectures":["arm64"],"Handler":"bootstrap","TracingConfig":{"Mode":"Active"},"LoggingConfig":{"LogFormat":"JSON"}}`
	ruled := func(extra string) string {
		return `{"Resources":{
		  "F":{"Type":"AWS::Lambda::Function","Properties":` + good + `},
		  "Rule":{"Type":"AWS::IoT::TopicRule","Properties":{"TopicRulePayload":{"Sql":"SELECT * FROM 'a'","Actions":[{"Lambda":{"FunctionArn":{"Fn::GetAtt":["F","Arn"]}}}],"ErrorAction":{"Sqs":{}}}}}` + extra + `}}`
	}
	topicKey := func(stmts string) string {
		return `{"Resources":{"T":{"Type":"AWS::SNS::Topic","Properties":{"KmsMasterKeyId":{"Ref":"K"}}},
		  "K":{"Type":"AWS::KMS::Key","Properties":{"KeyPolicy":{"Version":"2012-10-17","Statement":[` + stmts + `]}}}}}`
	}
	alarmTopicKey := func(t Template) []string { return CheckAlarmTopicKey(t, "T") }
	alarmMath := func(expr string) string {
		return `{"Resources":{"A":{"Type":"AWS::CloudWatch::Alarm","Properties":{"Metrics":[
		  {"Id":"a","MetricStat":{"Metric":{"Namespace":"AWS/Lambda","MetricName":"Errors"},"Period":300,"Stat":"Sum"},"ReturnData":false},
		  {"Id":"b","MetricStat":{"Metric":{"Namespace":"AWS/Lambda","MetricName":"Errors"},"Period":300,"Stat":"Sum"},"ReturnData":false},
		  {"Id":"total","Expression":"` + expr + `","ReturnData":true}]}}}}`
	}
	tests := []struct {
		name  string
		doc   string
		check func(Template) []string
		want  int
	}{
		{"iot:* on anything", role(`{"Effect":"Allow","Action":"iot:*","Resource":"arn:aws:iot:*:1:thing/*"}`), func(t Template) []string { return CheckLeastPrivilege(t, types) }, 1},
		{"Describe* wildcard", role(`{"Effect":"Allow","Action":["iot:Describe*"],"Resource":"arn:aws:iot:*:1:thing/*"}`), func(t Template) []string { return CheckLeastPrivilege(t, types) }, 1},
		{"star resource for a resource-level action", role(`{"Effect":"Allow","Action":["iot:DescribeThing","iot:RegisterCertificate"],"Resource":"*"}`), func(t Template) []string { return CheckLeastPrivilege(t, types) }, 1},
		{"star resource for an unknown action", role(`{"Effect":"Allow","Action":"iot:MadeUp","Resource":["*"]}`), func(t Template) []string { return CheckLeastPrivilege(t, types) }, 1},
		{"star resource where none is supported", role(`{"Effect":"Allow","Action":["iot:RegisterCertificate","iot:ListAttachedPolicies"],"Resource":"*"}`), func(t Template) []string { return CheckLeastPrivilege(t, types) }, 0},
		{"deny with wildcards is fine", role(`{"Effect":"Deny","Action":"*","Resource":"*"}`), func(t Template) []string { return CheckLeastPrivilege(t, types) }, 0},
		{"good function", fn(good), CheckFunctions, 0},
		{"x86 python function", fn(`{"Runtime":"python3.12","Architectures":["x86_64"],"Handler":"bootstrap","TracingConfig":{"Mode":"Active"},"LoggingConfig":{"LogFormat":"JSON"}}`), CheckFunctions, 2},
		{"no architectures, no tracing, text logs", fn(`{"Runtime":"provided.al2023","Handler":"bootstrap"}`), CheckFunctions, 3},
		{"rule-invoked function without invoke config", ruled(""), CheckDestinations, 1},
		{"invoke config without destination", ruled(`,"C":{"Type":"AWS::Lambda::EventInvokeConfig","Properties":{"FunctionName":{"Ref":"F"},"MaximumRetryAttempts":2}}`), CheckDestinations, 1},
		{"invoke config with destination", ruled(`,"C":{"Type":"AWS::Lambda::EventInvokeConfig","Properties":{"FunctionName":{"Ref":"F"},"MaximumRetryAttempts":2,"DestinationConfig":{"OnFailure":{"Destination":"arn:aws:sqs:eu-west-1:1:q"}}}}`), CheckDestinations, 0},
		{"events rule target without DLQ and retry policy", `{"Resources":{"F":{"Type":"AWS::Lambda::Function","Properties":{}},
		  "C":{"Type":"AWS::Lambda::EventInvokeConfig","Properties":{"FunctionName":{"Ref":"F"},"MaximumRetryAttempts":2,"DestinationConfig":{"OnFailure":{"Destination":"q"}}}},
		  "E":{"Type":"AWS::Events::Rule","Properties":{"Targets":[{"Arn":{"Fn::GetAtt":["F","Arn"]},"Id":"t"}]}}}}`, CheckDestinations, 2},
		{"IoT rule without error action", `{"Resources":{"Rule":{"Type":"AWS::IoT::TopicRule","Properties":{"TopicRulePayload":{"Actions":[]}}}}}`, CheckDestinations, 1},
		{"schedule target without DLQ and retry policy", `{"Resources":{"F":{"Type":"AWS::Lambda::Function","Properties":{}},
		  "C":{"Type":"AWS::Lambda::EventInvokeConfig","Properties":{"FunctionName":{"Ref":"F"},"MaximumRetryAttempts":0,"DestinationConfig":{"OnFailure":{"Destination":"q"}}}},
		  "S":{"Type":"AWS::Scheduler::Schedule","Properties":{"Target":{"Arn":{"Fn::GetAtt":["F","Arn"]}}}}}}`, CheckDestinations, 2},
		{"scheduled function without invoke config", `{"Resources":{"F":{"Type":"AWS::Lambda::Function","Properties":{}},
		  "S":{"Type":"AWS::Scheduler::Schedule","Properties":{"Target":{"Arn":{"Fn::GetAtt":["F","Arn"]},"RetryPolicy":{"MaximumRetryAttempts":0},"DeadLetterConfig":{"Arn":"q"}}}}}}`, CheckDestinations, 1},
		{"alarm topic under the AWS-managed key", `{"Resources":{"T":{"Type":"AWS::SNS::Topic","Properties":{"KmsMasterKeyId":"alias/aws/sns"}}}}`, alarmTopicKey, 1},
		{"unencrypted alarm topic", `{"Resources":{"T":{"Type":"AWS::SNS::Topic","Properties":{}}}}`, alarmTopicKey, 0},
		{"alarm topic key without a grant to CloudWatch", topicKey(`{"Effect":"Allow","Principal":{"AWS":{"Fn::Sub":"arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}},"Action":"kms:*","Resource":"*"}`), alarmTopicKey, 1},
		{"alarm topic key granting CloudWatch without a source condition", topicKey(`{"Effect":"Allow","Principal":{"AWS":{"Fn::Sub":"arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}},"Action":"kms:*","Resource":"*"},
		  {"Effect":"Allow","Principal":{"Service":"cloudwatch.amazonaws.com"},"Action":["kms:Decrypt","kms:GenerateDataKey*"],"Resource":"*"}`), alarmTopicKey, 1},
		{"alarm topic key granting CloudWatch Decrypt only", topicKey(`{"Effect":"Allow","Principal":{"AWS":{"Fn::Sub":"arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}},"Action":"kms:*","Resource":"*"},
		  {"Effect":"Allow","Principal":{"Service":"cloudwatch.amazonaws.com"},"Action":"kms:Decrypt","Resource":"*","Condition":{"StringEquals":{"aws:SourceAccount":{"Ref":"AWS::AccountId"}}}}`), alarmTopicKey, 1},
		{"alarm topic key without an administrator", topicKey(`{"Effect":"Allow","Principal":{"Service":"cloudwatch.amazonaws.com"},"Action":["kms:Decrypt","kms:GenerateDataKey*"],"Resource":"*","Condition":{"StringEquals":{"aws:SourceAccount":{"Ref":"AWS::AccountId"}}}}`), alarmTopicKey, 1},
		{"alarm topic key letting CloudWatch publish", topicKey(`{"Effect":"Allow","Principal":{"AWS":{"Fn::Sub":"arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}},"Action":"kms:*","Resource":"*"},
		  {"Effect":"Allow","Principal":{"Service":"cloudwatch.amazonaws.com"},"Action":["kms:Decrypt","kms:GenerateDataKey*"],"Resource":"*","Condition":{"StringEquals":{"aws:SourceAccount":{"Ref":"AWS::AccountId"}}}}`), alarmTopicKey, 0},
		{"alarm summing bare metrics", alarmMath("a + b"), CheckAlarmMathFills, 2},
		{"alarm filling one term of two", alarmMath("FILL(a, 0) + b"), CheckAlarmMathFills, 1},
		{"alarm filling with another value", alarmMath("FILL(a, 1) + FILL(b, 0)"), CheckAlarmMathFills, 1},
		{"alarm filling every term", alarmMath("FILL(a, 0) + fill( b ,0)"), CheckAlarmMathFills, 0},
		{"alarm on one metric", alarmMath("a * 100"), CheckAlarmMathFills, 0},
		{"pipe without DLQ", `{"Resources":{"P":{"Type":"AWS::Pipes::Pipe","Properties":{"SourceParameters":{"DynamoDBStreamParameters":{"StartingPosition":"LATEST"}}}}}}`, CheckDestinations, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tpl Template
			if err := json.Unmarshal([]byte(tt.doc), &tpl); err != nil {
				t.Fatalf("bad test document: %v", err)
			}
			got := tt.check(tpl)
			if len(got) != tt.want {
				t.Fatalf("problems = %d %q, want %d", len(got), got, tt.want)
			}
		})
	}
}

// TestRegionSlots: the replica slots of the global tables match the
// documented maximum of Regions.
func TestRegionSlots(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(root(t), "template.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	var conds []string
	for line := range strings.SplitSeq(text, "\n") {
		if name, _, ok := strings.Cut(strings.TrimSpace(line), ": !Not [!Equals [\"\", !Select ["); ok && strings.HasPrefix(name, "HasRegion") {
			conds = append(conds, name)
		}
	}
	sort.Strings(conds)
	want := []string{"HasRegion2", "HasRegion3", "HasRegion4", "HasRegion5", "HasRegion6"}
	if !slices.Equal(conds, want) {
		t.Fatalf("region slot conditions = %v, want %v", conds, want)
	}
	for _, c := range want {
		if n := strings.Count(text, c); n != 5 {
			t.Errorf("%s used %d times, want 5 (definition, inventory, data, presence and commands replicas)", c, n)
		}
	}
	if !strings.Contains(text, "1 to 6 regions") {
		t.Errorf("the Regions parameter no longer documents the 6-region limit")
	}
}

// TestDashboardBody: the dashboard body is JSON once Fn::Sub has replaced its
// variables, and it shows the EMF metrics the functions emit.
func TestDashboardBody(t *testing.T) {
	for tpl, tr := range translate(t) {
		sub, _ := tr.Template.Resources["Dashboard"].Properties["DashboardBody"].(map[string]any)
		parts, _ := sub["Fn::Sub"].([]any)
		if len(parts) != 2 {
			t.Fatalf("%s: DashboardBody is not a two-argument Fn::Sub", tpl)
		}
		body, _ := parts[0].(string)
		vars, _ := parts[1].(map[string]any)
		for {
			i := strings.Index(body, "${")
			if i < 0 {
				break
			}
			j := strings.Index(body[i:], "}")
			if j < 0 {
				t.Fatalf("%s: unterminated ${ in the dashboard body", tpl)
			}
			name := body[i+2 : i+j]
			if _, ok := vars[name]; !ok && !strings.HasPrefix(name, "AWS::") {
				t.Errorf("%s: dashboard variable ${%s} is not defined", tpl, name)
			}
			body = body[:i] + "X" + body[i+j+1:]
		}
		var dash struct {
			Widgets []map[string]any `json:"widgets"`
		}
		if err := json.Unmarshal([]byte(body), &dash); err != nil {
			t.Fatalf("%s: dashboard body is not JSON: %v", tpl, err)
		}
		if len(dash.Widgets) < 8 {
			t.Errorf("%s: %d widgets", tpl, len(dash.Widgets))
		}
		for _, m := range []string{"SagaOutcome", "StepOutcome", "CompensationFailed", "Rejected", "DeviceOnboarded", "Converged", "Stored", "Errors", "Throttles", "Duration", "ApproximateNumberOfMessagesVisible",
			// convergence (internal/workflow/converge) and the reconciler (internal/workflow/reconcile)
			"DriftFound", "DriftRepaired", "DriftUnrepaired", "ReconcileChecked", "ReconcilePassCompleted",
			"LeaseContended", "LeaseLost", "Superseded",
			"ObligationRecorded", "ObligationCompleted", "ObligationAbandoned", "ObligationUnrecorded", "RevocationPromoted", "RevocationNotRecorded", "ItemCaughtUp",
			// presence (internal/workflow/presence)
			"PresenceEvents", "PresenceStale", "PresencePublished", "PresenceIgnored", "IteratorAge",
			// commands (internal/workflow/commands)
			"Queued", "Sent", "Acked", "Expired", "DeliveryFailed"} {
			if !strings.Contains(body, m) {
				t.Errorf("%s: the dashboard does not show %s", tpl, m)
			}
		}
	}
}

// TestAlarmExpressions: CloudWatch refuses an alarm on a SEARCH expression
// (PutMetricAlarm fails, and with it the stack); an alarm over a dimension
// it does not pin uses a Metrics Insights query instead.
func TestAlarmExpressions(t *testing.T) {
	for tpl, tr := range translate(t) {
		res := tr.Template.Resources
		for _, id := range sortedKeys(res) {
			if res[id].Type != "AWS::CloudWatch::Alarm" {
				continue
			}
			metrics, _ := res[id].Properties["Metrics"].([]any)
			for _, m := range metrics {
				mm, _ := m.(map[string]any)
				expr, _ := mm["Expression"].(string)
				if strings.Contains(strings.ToUpper(expr), "SEARCH(") {
					t.Errorf("%s: alarm %s uses a SEARCH expression: %s", tpl, id, expr)
				}
				if strings.HasPrefix(strings.ToUpper(strings.TrimSpace(expr)), "SELECT ") && mm["Period"] == nil {
					t.Errorf("%s: alarm %s: a Metrics Insights query needs a Period", tpl, id)
				}
			}
		}
	}
}

// TestAlarmMathFillsIdleMetrics: an alarm that adds up several functions'
// metrics fills each one's empty periods with 0. Lambda publishes no
// Errors or Throttles datapoint for a function that was not invoked, and
// the sum of an empty series is empty: the alarm would not fire while any
// one of the functions is idle.
func TestAlarmMathFillsIdleMetrics(t *testing.T) {
	for tpl, tr := range translate(t) {
		for _, p := range CheckAlarmMathFills(tr.Template) {
			t.Errorf("%s: %s", tpl, p)
		}
		for _, id := range []string{"FunctionErrorsAlarm", "FunctionThrottlesAlarm", "ObligationsAlarm"} {
			if m, _ := prop(tr.Template.Resources[id], "Metrics").([]any); len(m) < 3 {
				t.Errorf("%s: %s is no longer a sum of several metrics; the check sees nothing", tpl, id)
			}
		}
		// Every function but the custom resource (which answers
		// CloudFormation itself) is watched for errors and throttles.
		for _, id := range []string{"FunctionErrorsAlarm", "FunctionThrottlesAlarm"} {
			watched := map[string]bool{}
			ms, _ := prop(tr.Template.Resources[id], "Metrics").([]any)
			for i := range ms {
				dims, _ := prop(tr.Template.Resources[id], "Metrics", i, "MetricStat", "Metric", "Dimensions").([]any)
				for j := range dims {
					if ref, ok := prop(tr.Template.Resources[id], "Metrics", i, "MetricStat", "Metric", "Dimensions", j, "Value").(map[string]any); ok {
						watched[fmt.Sprint(ref["Ref"])] = true
					}
				}
			}
			for _, fn := range functions {
				if fn != "SetupFunction" && !watched[fn] {
					t.Errorf("%s: %s does not watch %s", tpl, id, fn)
				}
			}
		}
	}
}

// TestLambdaLogFilterKeepsMetrics: Lambda's application log filter of
// every function stays at obs.LambdaLogLevel, whatever LogLevel says. The
// EMF lines carry no "level", which Lambda reads as INFO: tied to a
// LogLevel of WARN or ERROR, the filter would drop every custom metric. The
// functions filter their own logs at LOG_LEVEL, which follows LogLevel.
func TestLambdaLogFilterKeepsMetrics(t *testing.T) {
	for tpl, tr := range translate(t) {
		for _, fn := range functions {
			r := tr.Template.Resources[fn]
			if got := prop(r, "LoggingConfig", "ApplicationLogLevel"); got != obs.LambdaLogLevel {
				t.Errorf("%s: %s ApplicationLogLevel = %v, want %s (a filter above INFO drops the EMF lines)", tpl, fn, got, obs.LambdaLogLevel)
			}
			if got, _ := prop(r, "Environment", "Variables", "LOG_LEVEL").(map[string]any); got["Ref"] != "LogLevel" {
				t.Errorf("%s: %s LOG_LEVEL = %v, want the LogLevel parameter", tpl, fn, prop(r, "Environment", "Variables", "LOG_LEVEL"))
			}
		}
	}
}

// TestSetupServiceTimeout: CloudFormation stops waiting for the Setup
// custom resource soon after its function's own timeout, not after the
// default hour, when no answer comes (a crash before the function could
// answer). Not before it either: a slow answer inside the timeout counts.
func TestSetupServiceTimeout(t *testing.T) {
	for tpl, tr := range translate(t) {
		res := tr.Template.Resources
		timeout, _ := prop(res["SetupFunction"], "Timeout").(float64)
		st, ok := prop(res["Setup"], "ServiceTimeout").(float64)
		if !ok || st != float64(int(st)) {
			t.Fatalf("%s: Setup ServiceTimeout = %v, want a whole number of seconds (default: an hour)", tpl, prop(res["Setup"], "ServiceTimeout"))
		}
		if st <= timeout || st > timeout+120 || st > 3600 {
			t.Errorf("%s: Setup ServiceTimeout = %v s, want just above SetupFunction's timeout of %v s (and at most 3600)", tpl, st, timeout)
		}
	}
}

// TestResolve: the evaluator of conditions and Fn::If the template tests
// rely on.
func TestResolve(t *testing.T) {
	var tpl Template
	if err := json.Unmarshal([]byte(`{
	  "Parameters":{"N":{"Type":"String","Default":"10"},"E":{"Type":"String","Default":""}},
	  "Conditions":{"HasN":{"Fn::Not":[{"Fn::Equals":[{"Ref":"N"},"0"]}]},
	    "Both":{"Fn::And":[{"Condition":"HasN"},{"Fn::Equals":[{"Ref":"E"},"x"]}]},
	    "Either":{"Fn::Or":[{"Condition":"HasN"},{"Fn::Equals":[{"Ref":"E"},"x"]}]}},
	  "Resources":{}}`), &tpl); err != nil {
		t.Fatal(err)
	}
	ifn := func(cond string) any {
		return map[string]any{"Fn::If": []any{cond, map[string]any{"Ref": "N"}, map[string]any{"Ref": "AWS::NoValue"}}}
	}
	for _, c := range []struct {
		v       any
		params  map[string]string
		want    any
		present bool
	}{
		{ifn("HasN"), nil, "10", true},
		{ifn("HasN"), map[string]string{"N": "0"}, nil, false},
		{ifn("Both"), nil, nil, false},
		{ifn("Both"), map[string]string{"E": "x"}, "10", true},
		{ifn("Either"), map[string]string{"N": "0", "E": "x"}, "0", true},
		{ifn("Either"), map[string]string{"N": "0"}, nil, false},
		{map[string]any{"Ref": "Other"}, nil, map[string]any{"Ref": "Other"}, true},
		{[]any{ifn("HasN"), "a"}, map[string]string{"N": "0"}, []any{"a"}, true},
	} {
		got, present, err := Resolve(tpl, c.params, c.v)
		if err != nil || present != c.present || !reflect.DeepEqual(got, c.want) {
			t.Errorf("Resolve(%v, %v) = %v, %v, %v; want %v, %v", c.v, c.params, got, present, err, c.want, c.present)
		}
	}
	if _, _, err := Resolve(tpl, nil, ifn("Missing")); err == nil {
		t.Error("Resolve with an unknown condition: no error")
	}
}

// TestReservedConcurrencyOptional: JitrConcurrency and ReconcileConcurrency
// of 0 leave the function unreserved (ReservedConcurrentExecutions absent:
// an account whose concurrency quota is low, as new accounts' are, refuses
// any reservation); otherwise the function reserves that many. A
// ReservedConcurrentExecutions of 0 would throttle every invocation. No
// other function reserves concurrency.
func TestReservedConcurrencyOptional(t *testing.T) {
	for tpl, tr := range translate(t) {
		for _, c := range []struct {
			fn, param string
			values    map[string]any // parameter value -> reserved (nil: absent)
			def       float64
		}{
			{"JitrFunction", "JitrConcurrency", map[string]any{"0": nil, "10": 10.0, "1": 1.0, "100": 100.0}, 10},
			{"ReconcileFunction", "ReconcileConcurrency", map[string]any{"0": nil, "1": 1.0}, 1},
		} {
			reserved := func(params map[string]string) (any, bool) {
				t.Helper()
				v, ok, err := Resolve(tr.Template, params, prop(tr.Template.Resources[c.fn], "ReservedConcurrentExecutions"))
				if err != nil {
					t.Fatalf("%s: %s ReservedConcurrentExecutions: %v", tpl, c.fn, err)
				}
				if s, isString := v.(string); isString {
					f, err := strconv.ParseFloat(s, 64)
					if err != nil {
						t.Fatalf("%s: %s ReservedConcurrentExecutions %q", tpl, c.fn, s)
					}
					v = f
				}
				return v, ok
			}
			if v, ok := reserved(nil); !ok || v != c.def {
				t.Errorf("%s: %s reserves %v (present: %v) by default, want %v", tpl, c.fn, v, ok, c.def)
			}
			for pv, want := range c.values {
				v, ok := reserved(map[string]string{c.param: pv})
				switch {
				case want == nil && ok:
					t.Errorf("%s: %s=%s: %s ReservedConcurrentExecutions = %v, want absent (unreserved)", tpl, c.param, pv, c.fn, v)
				case want != nil && (!ok || v != want):
					t.Errorf("%s: %s=%s: %s ReservedConcurrentExecutions = %v (present: %v), want %v", tpl, c.param, pv, c.fn, v, ok, want)
				}
			}
		}
		for _, id := range sortedKeys(tr.Template.Resources) {
			r := tr.Template.Resources[id]
			if r.Type == "AWS::Lambda::Function" && id != "JitrFunction" && id != "ReconcileFunction" && r.Properties["ReservedConcurrentExecutions"] != nil {
				t.Errorf("%s: %s reserves concurrency %v", tpl, id, r.Properties["ReservedConcurrentExecutions"])
			}
		}
	}
}

// TestDomainConfigurationTLSPolicy: the custom domain's TLS policy is one of
// the names AWS IoT Core documents (iot-endpoints-tls-config), spelled as
// documented.
func TestDomainConfigurationTLSPolicy(t *testing.T) {
	documented := []string{
		"IoTSecurityPolicy_TLS13_1_3_2022_10",
		"IoTSecurityPolicy_TLS13_1_2_2022_10",
	}
	for tpl, tr := range translate(t) {
		dc := tr.Template.Resources["DomainConfiguration"]
		if dc.Type != "AWS::IoT::DomainConfiguration" {
			t.Fatalf("%s: no DomainConfiguration", tpl)
		}
		tls, _ := dc.Properties["TlsConfig"].(map[string]any)
		if p, _ := tls["SecurityPolicy"].(string); !slices.Contains(documented, p) {
			t.Errorf("%s: DomainConfiguration TLS security policy %q, want a TLS 1.3 policy of %v", tpl, p, documented)
		}
	}
}

// prop walks a resource's properties along path (map keys; an int indexes a
// list) and returns what it finds (nil when absent).
func prop(r Resource, path ...any) any {
	var v any = r.Properties
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			l, _ := v.([]any)
			if k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

// getAtt returns X of {"Fn::GetAtt": [X, attr]}.
func getAtt(v any) string {
	m, _ := v.(map[string]any)
	ga, _ := m["Fn::GetAtt"].([]any)
	if len(ga) != 2 {
		return ""
	}
	id, _ := ga[0].(string)
	return id
}

// TestReconcileFunction pins the reconciler's deployment: one pass at a time
// per region, every two minutes, shorter than that, failures kept and
// not retried (the next run resumes), and its alarm on unrepaired drift on
// the metric the code emits.
func TestReconcileFunction(t *testing.T) {
	for tpl, tr := range translate(t) {
		res := tr.Template.Resources
		fn := res["ReconcileFunction"]
		for _, c := range []struct {
			path []any
			want any
		}{
			{[]any{"Timeout"}, 110.0},
			{[]any{"MemorySize"}, 256.0},
		} {
			if got := prop(fn, c.path...); got != c.want {
				t.Errorf("%s: ReconcileFunction %v = %v, want %v", tpl, c.path, got, c.want)
			}
		}
		var schedules, configs int
		for _, id := range sortedKeys(res) {
			r := res[id]
			switch {
			case r.Type == "AWS::Lambda::EventInvokeConfig" && functionOf(tr.Template, r.Properties["FunctionName"]) == "ReconcileFunction":
				configs++
				if got := prop(r, "MaximumRetryAttempts"); got != 0.0 {
					t.Errorf("%s: %s MaximumRetryAttempts = %v, want 0 (the next run resumes)", tpl, id, got)
				}
				if q := getAtt(prop(r, "DestinationConfig", "OnFailure", "Destination")); res[q].Type != "AWS::SQS::Queue" {
					t.Errorf("%s: %s on-failure destination %q is not a queue of the template", tpl, id, q)
				}
			case r.Type == "AWS::Scheduler::Schedule" && functionOf(tr.Template, prop(r, "Target", "Arn")) == "ReconcileFunction":
				schedules++
				if got := prop(r, "ScheduleExpression"); got != "rate(2 minutes)" {
					t.Errorf("%s: %s ScheduleExpression = %v, want rate(2 minutes)", tpl, id, got)
				}
				if got := prop(r, "Target", "RetryPolicy", "MaximumRetryAttempts"); got != 0.0 {
					t.Errorf("%s: %s retries = %v, want 0", tpl, id, got)
				}
				if q := getAtt(prop(r, "Target", "DeadLetterConfig", "Arn")); res[q].Type != "AWS::SQS::Queue" {
					t.Errorf("%s: %s dead-letter queue %q is not a queue of the template", tpl, id, q)
				}
			}
		}
		if schedules != 1 || configs != 1 {
			t.Errorf("%s: ReconcileFunction has %d schedules and %d invoke configs, want 1 and 1", tpl, schedules, configs)
		}

		alarm := res["DriftUnrepairedAlarm"]
		var dim map[string]any
		if dims, _ := prop(alarm, "Dimensions").([]any); len(dims) == 1 {
			dim, _ = dims[0].(map[string]any)
		}
		if alarm.Type != "AWS::CloudWatch::Alarm" || prop(alarm, "Namespace") != obs.Namespace || prop(alarm, "MetricName") != "DriftUnrepaired" ||
			dim["Name"] != "Function" || dim["Value"] != reconcile.Function || prop(alarm, "Statistic") != "Sum" ||
			prop(alarm, "Period") != 900.0 || prop(alarm, "EvaluationPeriods") != 2.0 || prop(alarm, "Threshold") != 0.0 ||
			prop(alarm, "ComparisonOperator") != "GreaterThanThreshold" || prop(alarm, "TreatMissingData") != "notBreaching" {
			t.Errorf("%s: DriftUnrepairedAlarm = %v, want the sum of %s/DriftUnrepaired (Function=%s) over 15 minutes above 0 twice, missing data not breaching",
				tpl, alarm.Properties, obs.Namespace, reconcile.Function)
		}
	}
}

// TestTables pins what the code relies on in the tables: the inventory's
// certificate index (awsddb Inventory.ByCertificate) and revocation index
// (Inventory.RevokedOn), and the regional lease
// table keyed by thing name, without TTL (the fencing counter must outlive
// the leases).
func TestTables(t *testing.T) {
	for tpl, tr := range translate(t) {
		res := tr.Template.Resources
		inv := res["DeviceInventoryTable"]
		gsis, _ := prop(inv, "GlobalSecondaryIndexes").([]any)
		defs, _ := json.Marshal(prop(inv, "AttributeDefinitions"))
		for name, attr := range map[string]string{
			ddbitem.InventoryCertificateIndex: ddbitem.AttrCertificateID, // Inventory.ByCertificate
			ddbitem.InventoryRevocationIndex:  ddbitem.AttrRevokedDay,    // Inventory.RevokedOn
			ddbitem.InventoryRetirementIndex:  ddbitem.AttrRetireDay,     // Inventory.RetiringOn
		} {
			var index map[string]any
			for _, g := range gsis {
				if gm, _ := g.(map[string]any); gm["IndexName"] == name {
					index = gm
				}
			}
			if index == nil {
				t.Errorf("%s: the inventory has no index %s", tpl, name)
				continue
			}
			b, _ := json.Marshal(index)
			want := `{"IndexName":"` + name + `","KeySchema":[{"AttributeName":"` + attr +
				`","KeyType":"HASH"}],"Projection":{"ProjectionType":"KEYS_ONLY"}}`
			if string(b) != want {
				t.Errorf("%s: inventory index %s, want %s", tpl, b, want)
			}
			if !strings.Contains(string(defs), `{"AttributeName":"`+attr+`","AttributeType":"S"}`) {
				t.Errorf("%s: inventory attribute definitions %s lack %s", tpl, defs, attr)
			}
		}

		leases := res["DeviceLeasesTable"]
		if leases.Type != "AWS::DynamoDB::Table" {
			t.Fatalf("%s: DeviceLeasesTable is a %q, want a regional AWS::DynamoDB::Table", tpl, leases.Type)
		}
		ks, _ := json.Marshal(prop(leases, "KeySchema"))
		if string(ks) != `[{"AttributeName":"`+ddbitem.AttrThingName+`","KeyType":"HASH"}]` {
			t.Errorf("%s: lease table key schema %s, want %s HASH (ddbitem.LeaseKey)", tpl, ks, ddbitem.AttrThingName)
		}
		if prop(leases, "TimeToLiveSpecification") != nil {
			t.Errorf("%s: the lease table has a TTL; the fencing counters must outlive the leases", tpl)
		}
		if prop(leases, "PointInTimeRecoverySpecification", "PointInTimeRecoveryEnabled") != true {
			t.Errorf("%s: the lease table has no point-in-time recovery", tpl)
		}
		if prop(leases, "BillingMode") != "PAY_PER_REQUEST" {
			t.Errorf("%s: lease table billing %v", tpl, prop(leases, "BillingMode"))
		}
	}
}
