// Package policy evaluates AWS IoT Core policy documents the way the IoT
// Core data endpoint does for each connection: an explicit Deny wins,
// otherwise any Allow allows, otherwise the request is denied.
//
// Supported: Version, Statement (one object or a list) with Effect
// (Allow|Deny), Action and Resource (a string or a list of strings). Actions
// match case-insensitively and may hold the wildcards * and ?. Resources are
// ARNs that may hold the IAM glob wildcards * (any run of characters,
// including "/") and ? (exactly one character); these are not MQTT
// wildcards. With Version 2012-10-17, policy variables ${iot:...} are
// substituted before matching; a variable the request does not carry (or an
// unknown one) makes that resource match nothing, as in AWS. The escapes
// ${*}, ${?} and ${$} stand for a literal *, ? and $. Conditions, NotAction,
// NotResource and Principal are refused as unsupported (ErrInvalid), so that
// a document is never evaluated more permissively than AWS would.
package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/mriot/mriot/internal/core/fleet"
)

// The actions of the IoT Core data plane that the broker authorizes.
const (
	ActionConnect   = "iot:Connect"
	ActionPublish   = "iot:Publish"
	ActionSubscribe = "iot:Subscribe"
	ActionReceive   = "iot:Receive"
	// ActionRetainPublish is needed, besides iot:Publish, to publish with
	// the RETAIN flag set.
	ActionRetainPublish = "iot:RetainPublish"
)

// Policy variable names (without the ${ }) the broker supplies.
const (
	VarThingName  = "iot:Connection.Thing.ThingName"
	VarIsAttached = "iot:Connection.Thing.IsAttached"
	VarClientID   = "iot:ClientId"
	VarCommonName = "iot:Certificate.Subject.CommonName"
)

// Version is the policy language version under which variables apply.
const Version = "2012-10-17"

// Vars are the policy variables of one request, by name without the ${ }
// (e.g. "iot:ClientId"). An absent key is an unset variable.
type Vars map[string]string

// Effect is a statement's effect.
type Effect string

// Statement effects.
const (
	Allow Effect = "Allow"
	Deny  Effect = "Deny"
)

// Decision is the outcome of evaluating one document.
type Decision int

// Decisions: no statement matched, an Allow matched, a Deny matched.
const (
	DecisionNone Decision = iota
	DecisionAllow
	DecisionDeny
)

// Statement is one parsed policy statement.
type Statement struct {
	Effect    Effect
	Actions   []string
	Resources []string
}

// Document is a parsed IoT policy document.
type Document struct {
	Version    string
	Statements []Statement
}

// stringOrList decodes a JSON string or a list of strings.
type stringOrList []string

func (s *stringOrList) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var one string
		if err := json.Unmarshal(b, &one); err != nil {
			return err
		}
		*s = []string{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("want a string or a list of strings: %w", err)
	}
	*s = many
	return nil
}

type rawStatement struct {
	Effect      string          `json:"Effect"`
	Action      stringOrList    `json:"Action"`
	Resource    stringOrList    `json:"Resource"`
	Sid         string          `json:"Sid"`
	Condition   json.RawMessage `json:"Condition"`
	NotAction   json.RawMessage `json:"NotAction"`
	NotResource json.RawMessage `json:"NotResource"`
	Principal   json.RawMessage `json:"Principal"`
}

// statementList decodes one statement object or a list of them.
type statementList []rawStatement

func (s *statementList) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '{' {
		var one rawStatement
		if err := json.Unmarshal(b, &one); err != nil {
			return err
		}
		*s = []rawStatement{one}
		return nil
	}
	var many []rawStatement
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("want a statement or a list of statements: %w", err)
	}
	*s = many
	return nil
}

// Parse parses a policy document. Every error wraps fleet.ErrInvalid.
func Parse(doc string) (*Document, error) {
	var raw struct {
		Version   string        `json:"Version"`
		Statement statementList `json:"Statement"`
	}
	if err := json.Unmarshal([]byte(doc), &raw); err != nil {
		return nil, fmt.Errorf("parse policy document: %w: %w", fleet.ErrInvalid, err)
	}
	if len(raw.Statement) == 0 {
		return nil, fmt.Errorf("policy document has no Statement: %w", fleet.ErrInvalid)
	}
	d := &Document{Version: raw.Version}
	for i, rs := range raw.Statement {
		switch {
		case len(rs.Condition) > 0 && string(rs.Condition) != "null":
			return nil, fmt.Errorf("statement %d: Condition is not supported: %w", i, fleet.ErrInvalid)
		case len(rs.NotAction) > 0, len(rs.NotResource) > 0, len(rs.Principal) > 0:
			return nil, fmt.Errorf("statement %d: NotAction, NotResource and Principal are not supported: %w", i, fleet.ErrInvalid)
		}
		eff := Effect(rs.Effect)
		if eff != Allow && eff != Deny {
			return nil, fmt.Errorf("statement %d: Effect %q (want Allow or Deny): %w", i, rs.Effect, fleet.ErrInvalid)
		}
		if len(rs.Action) == 0 {
			return nil, fmt.Errorf("statement %d: no Action: %w", i, fleet.ErrInvalid)
		}
		if len(rs.Resource) == 0 {
			return nil, fmt.Errorf("statement %d: no Resource: %w", i, fleet.ErrInvalid)
		}
		for _, a := range rs.Action {
			if a == "" || !utf8.ValidString(a) {
				return nil, fmt.Errorf("statement %d: empty or invalid Action: %w", i, fleet.ErrInvalid)
			}
		}
		for _, r := range rs.Resource {
			if r == "" || !utf8.ValidString(r) {
				return nil, fmt.Errorf("statement %d: empty or invalid Resource: %w", i, fleet.ErrInvalid)
			}
		}
		d.Statements = append(d.Statements, Statement{Effect: eff, Actions: rs.Action, Resources: rs.Resource})
	}
	return d, nil
}

// Evaluate returns the document's decision on action over resourceARN.
func (d *Document) Evaluate(action, resourceARN string, vars Vars) Decision {
	out := DecisionNone
	for _, st := range d.Statements {
		if !st.matchesAction(action) || !d.matchesResource(st, resourceARN, vars) {
			continue
		}
		if st.Effect == Deny {
			return DecisionDeny
		}
		out = DecisionAllow
	}
	return out
}

func (st Statement) matchesAction(action string) bool {
	for _, a := range st.Actions {
		if Match(strings.ToLower(a), strings.ToLower(action)) {
			return true
		}
	}
	return false
}

func (d *Document) matchesResource(st Statement, resource string, vars Vars) bool {
	for _, r := range st.Resources {
		var p pattern
		if d.Version == Version {
			var err error
			p, err = compile(r, vars, true)
			if err != nil { // an unset or unknown variable: this resource matches nothing
				continue
			}
		} else {
			p, _ = compile(r, nil, false) // no variables before 2012-10-17: ${...} is literal
		}
		if p.match(resource) {
			return true
		}
	}
	return false
}

// Allowed evaluates every document for action over resourceARN: an explicit
// Deny in any document wins, else any Allow allows, else it is denied. A
// document that does not parse is an error (and the request is denied).
func Allowed(docs []string, action, resourceARN string, vars Vars) (bool, error) {
	allowed := false
	for i, doc := range docs {
		d, err := cached(doc)
		if err != nil {
			return false, fmt.Errorf("policy %d: %w", i, err)
		}
		switch d.Evaluate(action, resourceARN, vars) {
		case DecisionDeny:
			return false, nil
		case DecisionAllow:
			allowed = true
		}
	}
	return allowed, nil
}

// cache of parsed documents: the broker evaluates the same few documents on
// every packet.
var cache struct {
	sync.Mutex
	m map[string]*Document
}

const cacheMax = 4096

func cached(doc string) (*Document, error) {
	cache.Lock()
	d, ok := cache.m[doc]
	cache.Unlock()
	if ok {
		return d, nil
	}
	d, err := Parse(doc)
	if err != nil {
		return nil, err
	}
	cache.Lock()
	if cache.m == nil || len(cache.m) >= cacheMax {
		cache.m = map[string]*Document{}
	}
	cache.m[doc] = d
	cache.Unlock()
	return d, nil
}

// DataRuleName is the data rule's name (template.yaml's DataRule for the
// application mriot): the rule a device invokes directly with Basic Ingest.
const DataRuleName = "mriot_data"

// BasicIngestPrefix begins every Basic Ingest topic: $aws/rules/<rule>/...
// goes to that rule alone, never through the message broker.
const BasicIngestPrefix = "$aws/rules/"

// DevicePolicy is the device policy of template.yaml for region and
// account: a device connects with its own thing name as client id,
// publishes under i/<thing>/ (and its telemetry to the data rule directly
// with Basic Ingest, $aws/rules/mriot_data/i/<thing>/m), and subscribes to
// and receives e/<thing>/ topics.
func DevicePolicy(region, account string) string {
	arn := "arn:aws:iot:" + region + ":" + account + ":"
	const thing = "${iot:Connection.Thing.ThingName}"
	stmt := func(action, resource string) string {
		return `{"Effect":"Allow","Action":` + jsonString(action) + `,"Resource":` + jsonString(resource) + `}`
	}
	return `{"Version":"` + Version + `","Statement":[` +
		stmt(ActionConnect, arn+"client/"+thing) + "," +
		stmt(ActionPublish, arn+"topic/i/"+thing+"/*") + "," +
		stmt(ActionPublish, arn+"topic/"+BasicIngestPrefix+DataRuleName+"/i/"+thing+"/m") + "," +
		stmt(ActionSubscribe, arn+"topicfilter/e/"+thing+"/*") + "," +
		stmt(ActionReceive, arn+"topic/e/"+thing+"/*") + "]}"
}

func jsonString(s string) string {
	b, _ := json.Marshal(s) // marshalling a string cannot fail
	return string(b)
}

// ResourceARN builds the ARN of an IoT data-plane resource: kind is client,
// topic or topicfilter.
func ResourceARN(region, account, kind, name string) string {
	return "arn:aws:iot:" + region + ":" + account + ":" + kind + "/" + name
}
