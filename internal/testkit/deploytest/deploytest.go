// Package deploytest holds the deployment's tests: cfn-lint and the SAM
// transform on every template, policy checks on the transformed template
// (least privilege, runtime, on-failure destinations), the event fixtures,
// and every function's bootstrap under the Lambda Runtime Interface Emulator
// against moto_server. This file holds the checks, so that their own tests
// can show each one fails on a bad template.
package deploytest

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// Templates are the SAM templates of the repository, relative to its root.
var Templates = []string{"template.yaml"}

// Translated is the output of scripts/sam-translate.py.
type Translated struct {
	Template Template `json:"template"`
	// ResourceTypes maps every IAM action of the template to the resource
	// types the service authorization reference lists for it; an empty list
	// means the action supports no resource-level permission, null that the
	// action is unknown.
	ResourceTypes map[string][]string `json:"resourceTypes"`
}

// Template is a CloudFormation template (JSON form).
type Template struct {
	Parameters map[string]Parameter `json:"Parameters"`
	Conditions map[string]any       `json:"Conditions"`
	Resources  map[string]Resource  `json:"Resources"`
}

// Parameter is one parameter of a template.
type Parameter struct {
	Type    string `json:"Type"`
	Default any    `json:"Default"`
}

// Resource is one resource of a template.
type Resource struct {
	Type       string         `json:"Type"`
	Condition  string         `json:"Condition"`
	Properties map[string]any `json:"Properties"`
}

// Statement is an IAM policy statement found in a template.
type Statement struct {
	Where    string // resource logical id and policy
	Effect   string
	Actions  []string
	Resource []any
}

// Statements returns every IAM statement of the template's roles, managed
// policies and inline policies, in a stable order.
func Statements(t Template) []Statement {
	var out []Statement
	ids := sortedKeys(t.Resources)
	for _, id := range ids {
		r := t.Resources[id]
		switch r.Type {
		case "AWS::IAM::Role":
			pols, _ := r.Properties["Policies"].([]any)
			for i, p := range pols {
				pm, _ := p.(map[string]any)
				name, _ := pm["PolicyName"].(string)
				out = append(out, docStatements(fmt.Sprintf("%s/Policies[%d:%s]", id, i, name), pm["PolicyDocument"])...)
			}
		case "AWS::IAM::Policy", "AWS::IAM::ManagedPolicy":
			out = append(out, docStatements(id, r.Properties["PolicyDocument"])...)
		}
	}
	return out
}

func docStatements(where string, doc any) []Statement {
	dm, _ := doc.(map[string]any)
	var sts []any
	switch s := dm["Statement"].(type) {
	case []any:
		sts = s
	case map[string]any:
		sts = []any{s}
	}
	var out []Statement
	for _, s := range sts {
		sm, _ := s.(map[string]any)
		st := Statement{Where: where}
		st.Effect, _ = sm["Effect"].(string)
		st.Actions = strs(sm["Action"])
		switch r := sm["Resource"].(type) {
		case []any:
			st.Resource = r
		case nil:
		default:
			st.Resource = []any{r}
		}
		out = append(out, st)
	}
	return out
}

func strs(v any) []string {
	switch x := v.(type) {
	case string:
		return []string{x}
	case []any:
		var out []string
		for _, e := range x {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// CheckLeastPrivilege reports every Allow statement that grants a wildcard
// action (iot:*, iot:Describe*, *) or uses "Resource": "*" for an action that
// supports resource-level permissions (or that resourceTypes does not know).
func CheckLeastPrivilege(t Template, resourceTypes map[string][]string) []string {
	var problems []string
	for _, st := range Statements(t) {
		if st.Effect != "Allow" {
			continue
		}
		star := false
		for _, r := range st.Resource {
			if s, ok := r.(string); ok && s == "*" {
				star = true
			}
		}
		for _, a := range st.Actions {
			if strings.Contains(a, "*") {
				problems = append(problems, fmt.Sprintf("%s: wildcard action %q", st.Where, a))
				continue
			}
			if !star {
				continue
			}
			types, known := resourceTypes[a]
			switch {
			case !known || types == nil:
				problems = append(problems, fmt.Sprintf("%s: %q on \"*\": the action is not in the service authorization data", st.Where, a))
			case len(types) > 0:
				problems = append(problems, fmt.Sprintf("%s: %q on \"*\" but it supports resource-level permissions (%s)", st.Where, a, strings.Join(types, ", ")))
			}
		}
	}
	return problems
}

// CheckFunctions reports every Lambda function not on provided.al2023 /
// arm64 with the bootstrap handler, active tracing and JSON logs.
func CheckFunctions(t Template) []string {
	var problems []string
	for _, id := range sortedKeys(t.Resources) {
		r := t.Resources[id]
		if r.Type != "AWS::Lambda::Function" {
			continue
		}
		p := r.Properties
		if p["Runtime"] != "provided.al2023" {
			problems = append(problems, fmt.Sprintf("%s: runtime %v, want provided.al2023", id, p["Runtime"]))
		}
		if a := strs(p["Architectures"]); len(a) != 1 || a[0] != "arm64" {
			problems = append(problems, fmt.Sprintf("%s: architectures %v, want [arm64]", id, p["Architectures"]))
		}
		if p["Handler"] != "bootstrap" {
			problems = append(problems, fmt.Sprintf("%s: handler %v, want bootstrap", id, p["Handler"]))
		}
		if tc, _ := p["TracingConfig"].(map[string]any); tc["Mode"] != "Active" {
			problems = append(problems, fmt.Sprintf("%s: tracing %v, want Active", id, p["TracingConfig"]))
		}
		if lc, _ := p["LoggingConfig"].(map[string]any); lc["LogFormat"] != "JSON" {
			problems = append(problems, fmt.Sprintf("%s: log format %v, want JSON", id, p["LoggingConfig"]))
		}
	}
	return problems
}

// RuleInvoked returns the logical ids of the Lambda functions an IoT topic
// rule, an EventBridge rule or an EventBridge Scheduler schedule invokes
// (each asynchronously), with the rules and schedules that invoke them.
func RuleInvoked(t Template) map[string][]string {
	out := map[string][]string{}
	for _, id := range sortedKeys(t.Resources) {
		r := t.Resources[id]
		switch r.Type {
		case "AWS::IoT::TopicRule":
			payload, _ := r.Properties["TopicRulePayload"].(map[string]any)
			actions, _ := payload["Actions"].([]any)
			for _, a := range actions {
				am, _ := a.(map[string]any)
				if l, ok := am["Lambda"].(map[string]any); ok {
					if fn := functionOf(t, l["FunctionArn"]); fn != "" {
						out[fn] = append(out[fn], id)
					}
				}
			}
		case "AWS::Events::Rule":
			targets, _ := r.Properties["Targets"].([]any)
			for _, tg := range targets {
				tm, _ := tg.(map[string]any)
				if fn := functionOf(t, tm["Arn"]); fn != "" {
					out[fn] = append(out[fn], id)
				}
			}
		case "AWS::Scheduler::Schedule":
			tm, _ := r.Properties["Target"].(map[string]any)
			if fn := functionOf(t, tm["Arn"]); fn != "" {
				out[fn] = append(out[fn], id)
			}
		}
	}
	return out
}

// functionOf returns the Lambda function a {"Fn::GetAtt": [X, "Arn"]} or
// {"Ref": X} names, "" for anything else.
func functionOf(t Template, v any) string {
	m, _ := v.(map[string]any)
	var id string
	switch {
	case m["Ref"] != nil:
		id, _ = m["Ref"].(string)
	case m["Fn::GetAtt"] != nil:
		switch g := m["Fn::GetAtt"].(type) {
		case []any:
			if len(g) > 0 {
				id, _ = g[0].(string)
			}
		case string:
			id, _, _ = strings.Cut(g, ".")
		}
	}
	if t.Resources[id].Type == "AWS::Lambda::Function" {
		return id
	}
	return ""
}

// CheckDestinations reports every rule-invoked function without an
// asynchronous invoke configuration that bounds retries and names an
// on-failure destination, every IoT rule without an error action, and every
// EventBridge rule target and EventBridge Scheduler schedule target without a
// retry policy and a dead-letter queue.
func CheckDestinations(t Template) []string {
	var problems []string
	invoked := RuleInvoked(t)
	configs := map[string]map[string]any{}
	for _, id := range sortedKeys(t.Resources) {
		r := t.Resources[id]
		if r.Type == "AWS::Lambda::EventInvokeConfig" {
			if fn := functionOf(t, r.Properties["FunctionName"]); fn != "" {
				configs[fn] = r.Properties
			}
		}
	}
	for _, fn := range sortedKeys(invoked) {
		c, ok := configs[fn]
		if !ok {
			problems = append(problems, fmt.Sprintf("%s (invoked by %v): no EventInvokeConfig", fn, invoked[fn]))
			continue
		}
		if _, ok := c["MaximumRetryAttempts"]; !ok {
			problems = append(problems, fmt.Sprintf("%s: EventInvokeConfig without MaximumRetryAttempts", fn))
		}
		dc, _ := c["DestinationConfig"].(map[string]any)
		of, _ := dc["OnFailure"].(map[string]any)
		if of["Destination"] == nil || of["Destination"] == "" {
			problems = append(problems, fmt.Sprintf("%s (invoked by %v): no on-failure destination", fn, invoked[fn]))
		}
	}
	for _, id := range sortedKeys(t.Resources) {
		r := t.Resources[id]
		switch r.Type {
		case "AWS::IoT::TopicRule":
			payload, _ := r.Properties["TopicRulePayload"].(map[string]any)
			if payload["ErrorAction"] == nil {
				problems = append(problems, fmt.Sprintf("%s: IoT rule without an error action", id))
			}
		case "AWS::Events::Rule":
			targets, _ := r.Properties["Targets"].([]any)
			for i, tg := range targets {
				tm, _ := tg.(map[string]any)
				if dl, _ := tm["DeadLetterConfig"].(map[string]any); dl["Arn"] == nil {
					problems = append(problems, fmt.Sprintf("%s target %d: no dead-letter queue", id, i))
				}
				if tm["RetryPolicy"] == nil {
					problems = append(problems, fmt.Sprintf("%s target %d: no retry policy", id, i))
				}
			}
		case "AWS::Scheduler::Schedule":
			tm, _ := r.Properties["Target"].(map[string]any)
			if dl, _ := tm["DeadLetterConfig"].(map[string]any); dl["Arn"] == nil {
				problems = append(problems, fmt.Sprintf("%s target: no dead-letter queue", id))
			}
			if tm["RetryPolicy"] == nil {
				problems = append(problems, fmt.Sprintf("%s target: no retry policy", id))
			}
		case "AWS::Pipes::Pipe":
			sp, _ := r.Properties["SourceParameters"].(map[string]any)
			for kind, v := range sp {
				vm, _ := v.(map[string]any)
				if dl, _ := vm["DeadLetterConfig"].(map[string]any); strings.HasSuffix(kind, "StreamParameters") && dl["Arn"] == nil {
					problems = append(problems, fmt.Sprintf("%s: stream source without a dead-letter queue", id))
				}
			}
		}
	}
	return problems
}

// CheckAlarmTopicKey reports why CloudWatch alarms could not publish to
// the SNS topic of logical id topic: an AWS-managed key (alias/aws/sns,
// whose key policy cannot be changed to let cloudwatch.amazonaws.com use it)
// or a key of the template whose policy does not give the account's root
// the key's administration and cloudwatch.amazonaws.com kms:Decrypt and
// kms:GenerateDataKey* under an aws:SourceAccount condition. A topic without
// KmsMasterKeyId is unencrypted, which alarms can publish to.
func CheckAlarmTopicKey(t Template, topic string) []string {
	r, ok := t.Resources[topic]
	if !ok || r.Type != "AWS::SNS::Topic" {
		return []string{fmt.Sprintf("%s: no such SNS topic", topic)}
	}
	keyID, set := r.Properties["KmsMasterKeyId"]
	if !set {
		return nil
	}
	if s, ok := keyID.(string); ok {
		if strings.HasPrefix(s, "alias/aws/") || strings.Contains(s, ":alias/aws/") {
			return []string{fmt.Sprintf("%s: encrypted with the AWS-managed key %s, whose key policy cannot let cloudwatch.amazonaws.com use it", topic, s)}
		}
		return []string{fmt.Sprintf("%s: KmsMasterKeyId %q is not a key of the template: its policy cannot be checked", topic, s)}
	}
	key := refOrGetAtt(keyID)
	k, ok := t.Resources[key]
	if !ok || k.Type != "AWS::KMS::Key" {
		return []string{fmt.Sprintf("%s: KmsMasterKeyId %v is not a key of the template: its policy cannot be checked", topic, keyID)}
	}
	var problems []string
	var admin, cloudwatch bool
	for _, st := range docStatementsRaw(k.Properties["KeyPolicy"]) {
		if st["Effect"] != "Allow" {
			continue
		}
		principal, _ := st["Principal"].(map[string]any)
		actions := strs(st["Action"])
		if rootPrincipal(principal["AWS"]) && slices.Contains(actions, "kms:*") {
			admin = true
		}
		if !slices.Contains(strs(principal["Service"]), "cloudwatch.amazonaws.com") {
			continue
		}
		cond, _ := st["Condition"].(map[string]any)
		eq, _ := cond["StringEquals"].(map[string]any)
		if matchAny(actions, "kms:Decrypt", false) && coversGenerateDataKey(actions) && eq["aws:SourceAccount"] != nil {
			cloudwatch = true
		}
	}
	if !admin {
		problems = append(problems, fmt.Sprintf("%s: the key policy of %s does not give the account root kms:*", topic, key))
	}
	if !cloudwatch {
		problems = append(problems, fmt.Sprintf("%s: the key policy of %s does not let cloudwatch.amazonaws.com kms:Decrypt and kms:GenerateDataKey* under an aws:SourceAccount condition", topic, key))
	}
	return problems
}

// coversGenerateDataKey: the actions grant every kms:GenerateDataKey*
// action (the wildcard itself, or kms:*), which SNS asks for on the
// publisher's behalf.
func coversGenerateDataKey(actions []string) bool {
	for _, a := range actions {
		if strings.EqualFold(a, "kms:GenerateDataKey*") || a == "kms:*" || a == "*" {
			return true
		}
	}
	return false
}

// rootPrincipal: v names the account's root (arn:...:iam::<account>:root,
// as a string or an Fn::Sub).
func rootPrincipal(v any) bool {
	for _, p := range append(strs(v), subString(v)) {
		if strings.HasSuffix(p, ":root") {
			return true
		}
	}
	return false
}

// subString is the template string of an {"Fn::Sub": "..."}, "" otherwise.
func subString(v any) string {
	m, _ := v.(map[string]any)
	s, _ := m["Fn::Sub"].(string)
	return s
}

// refOrGetAtt returns X of {"Ref": X} or {"Fn::GetAtt": [X, ...]}.
func refOrGetAtt(v any) string {
	m, _ := v.(map[string]any)
	if id, ok := m["Ref"].(string); ok {
		return id
	}
	switch g := m["Fn::GetAtt"].(type) {
	case []any:
		if len(g) > 0 {
			id, _ := g[0].(string)
			return id
		}
	case string:
		id, _, _ := strings.Cut(g, ".")
		return id
	}
	return ""
}

// docStatementsRaw returns the statements of a policy document as maps.
func docStatementsRaw(doc any) []map[string]any {
	dm, _ := doc.(map[string]any)
	var out []map[string]any
	switch s := dm["Statement"].(type) {
	case []any:
		for _, e := range s {
			if m, ok := e.(map[string]any); ok {
				out = append(out, m)
			}
		}
	case map[string]any:
		out = append(out, s)
	}
	return out
}

// CheckAlarmMathFills reports every alarm metric-math expression that
// combines several metrics and uses one of them outside FILL(id, 0). A
// metric with no datapoint in a period (a function not invoked) makes the
// whole expression empty for that period, whatever the other terms say: the
// alarm could not fire while any one of them is idle.
func CheckAlarmMathFills(t Template) []string {
	var problems []string
	for _, id := range sortedKeys(t.Resources) {
		r := t.Resources[id]
		if r.Type != "AWS::CloudWatch::Alarm" {
			continue
		}
		metrics, _ := r.Properties["Metrics"].([]any)
		stats := map[string]bool{}
		var exprs []string
		for _, m := range metrics {
			mm, _ := m.(map[string]any)
			mid, _ := mm["Id"].(string)
			if mm["MetricStat"] != nil {
				stats[mid] = true
			}
			if e, ok := mm["Expression"].(string); ok && !strings.HasPrefix(strings.ToUpper(strings.TrimSpace(e)), "SELECT ") {
				exprs = append(exprs, e)
			}
		}
		for _, e := range exprs {
			used := map[string]bool{}
			for _, m := range fillZero.FindAllStringSubmatch(e, -1) {
				used[m[1]] = true
			}
			var bare []string
			for _, tok := range identifier.FindAllString(fillZero.ReplaceAllString(e, "0"), -1) {
				if stats[tok] {
					used[tok] = true
					bare = append(bare, fmt.Sprintf("%s: metric %s outside FILL(%s, 0) in %q", id, tok, tok, e))
				}
			}
			// With one metric an empty period is TreatMissingData's case.
			if len(used) >= 2 {
				problems = append(problems, bare...)
			}
		}
	}
	return problems
}

var (
	fillZero   = regexp.MustCompile(`(?i)\bFILL\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,\s*0\s*\)`)
	identifier = regexp.MustCompile(`[A-Za-z_][A-Za-z0-9_]*`)
)

// Resolve evaluates v as CloudFormation would for a stack with the
// parameter values params (the others take their defaults): Ref of a
// parameter, Fn::If on the template's conditions (Fn::Equals, Fn::Not,
// Fn::And, Fn::Or, Condition). It returns present false for AWS::NoValue. Any
// other intrinsic function is returned as it is, inside lists and maps too.
func Resolve(t Template, params map[string]string, v any) (value any, present bool, err error) {
	switch x := v.(type) {
	case map[string]any:
		if len(x) == 1 {
			if ref, ok := x["Ref"].(string); ok {
				if ref == "AWS::NoValue" {
					return nil, false, nil
				}
				if p, ok := t.Parameters[ref]; ok {
					if pv, ok := params[ref]; ok {
						return pv, true, nil
					}
					if p.Default == nil {
						return nil, false, fmt.Errorf("parameter %s has no value and no default", ref)
					}
					return fmt.Sprint(p.Default), true, nil
				}
				return x, true, nil
			}
			if args, ok := x["Fn::If"].([]any); ok {
				if len(args) != 3 {
					return nil, false, fmt.Errorf("Fn::If with %d arguments", len(args))
				}
				name, _ := args[0].(string)
				c, err := condition(t, params, map[string]any{"Condition": name})
				if err != nil {
					return nil, false, err
				}
				if c {
					return Resolve(t, params, args[1])
				}
				return Resolve(t, params, args[2])
			}
		}
		out := make(map[string]any, len(x))
		for k, e := range x {
			r, ok, err := Resolve(t, params, e)
			if err != nil {
				return nil, false, err
			}
			if ok {
				out[k] = r
			}
		}
		return out, true, nil
	case []any:
		out := make([]any, 0, len(x))
		for _, e := range x {
			r, ok, err := Resolve(t, params, e)
			if err != nil {
				return nil, false, err
			}
			if ok {
				out = append(out, r)
			}
		}
		return out, true, nil
	}
	return v, true, nil
}

// condition evaluates a condition expression of the template.
func condition(t Template, params map[string]string, expr any) (bool, error) {
	m, _ := expr.(map[string]any)
	if len(m) != 1 {
		return false, fmt.Errorf("condition %v: want one function", expr)
	}
	for fn, arg := range m {
		args, _ := arg.([]any)
		switch fn {
		case "Condition":
			name, _ := arg.(string)
			def, ok := t.Conditions[name]
			if !ok {
				return false, fmt.Errorf("no condition %q", name)
			}
			return condition(t, params, def)
		case "Fn::Equals":
			if len(args) != 2 {
				return false, fmt.Errorf("Fn::Equals with %d arguments", len(args))
			}
			var vals [2]string
			for i, a := range args {
				r, _, err := Resolve(t, params, a)
				if err != nil {
					return false, err
				}
				if _, unresolved := r.(map[string]any); unresolved {
					return false, fmt.Errorf("Fn::Equals on %v: cannot be evaluated here", a)
				}
				vals[i] = fmt.Sprint(r)
			}
			return vals[0] == vals[1], nil
		case "Fn::Not":
			if len(args) != 1 {
				return false, fmt.Errorf("Fn::Not with %d arguments", len(args))
			}
			c, err := condition(t, params, args[0])
			return !c, err
		case "Fn::And", "Fn::Or":
			and := fn == "Fn::And"
			for _, a := range args {
				c, err := condition(t, params, a)
				if err != nil {
					return false, err
				}
				if c != and {
					return c, nil
				}
			}
			return and, nil
		}
		return false, fmt.Errorf("condition function %s not supported", fn)
	}
	return false, nil
}

// ParseTranslated decodes the output of scripts/sam-translate.py.
func ParseTranslated(b []byte) (Translated, error) {
	var tr Translated
	if err := json.Unmarshal(b, &tr); err != nil {
		return tr, fmt.Errorf("decode translated template: %w", err)
	}
	if len(tr.Template.Resources) == 0 {
		return tr, fmt.Errorf("translated template has no resources")
	}
	return tr, nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
