// Package rules is the local stand-in for the AWS IoT rules engine: a rule
// is an SQL statement of the form
//
//	SELECT <select list> FROM '<topic filter>' [WHERE <field> = '<value>']
//
// evaluated on every message published on a matching topic. The select list
// takes what the mriot rules use, with AWS's meaning: * (the payload),
// payload fields (a.b.c), topic() and topic(n), timestamp(), newuuid(),
// clientid(), principal(), each with an optional AS alias. A payload that is
// not a JSON object has no fields, so selecting one yields nothing for it, as
// in AWS.
package rules

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
)

// ErrSyntax is returned for an SQL statement this engine does not understand.
var ErrSyntax = errors.New("rule SQL syntax")

// Message is one message seen by the rules engine.
type Message struct {
	Topic     string
	Payload   []byte
	ClientID  string
	Principal string // certificate id of the publisher
	Time      time.Time
}

// Rule is a parsed rule.
type Rule struct {
	SQL    string
	filter string
	star   bool
	fields []selectItem
	where  *whereClause
	// NewUUID makes ids for newuuid(); a random UUIDv4 (NewUUID) when nil.
	NewUUID func() string
}

type selectItem struct {
	kind  string // "field", "topic", "timestamp", "newuuid", "clientid", "principal"
	path  []string
	n     int // topic(n); 0 = whole topic
	alias string
}

type whereClause struct {
	path  []string
	value string
}

// Parse parses a rule statement.
func Parse(sql string) (*Rule, error) {
	s := strings.TrimSpace(sql)
	upper := asciiUpper(s) // same byte offsets as s, unlike strings.ToUpper
	if !strings.HasPrefix(upper, "SELECT ") {
		return nil, fmt.Errorf("%w: %q does not start with SELECT", ErrSyntax, sql)
	}
	from := strings.Index(upper, " FROM ")
	if from < len("SELECT ") {
		return nil, fmt.Errorf("%w: %q has no FROM", ErrSyntax, sql)
	}
	r := &Rule{SQL: sql}
	if err := r.parseSelect(strings.TrimSpace(s[len("SELECT "):from])); err != nil {
		return nil, err
	}
	rest := strings.TrimSpace(s[from+len(" FROM "):])
	if len(rest) < 2 || rest[0] != '\'' {
		return nil, fmt.Errorf("%w: FROM needs a quoted topic filter in %q", ErrSyntax, sql)
	}
	end := strings.IndexByte(rest[1:], '\'')
	if end < 0 {
		return nil, fmt.Errorf("%w: unterminated topic filter in %q", ErrSyntax, sql)
	}
	r.filter = rest[1 : 1+end]
	if err := ValidateFilter(r.filter); err != nil {
		return nil, err
	}
	rest = strings.TrimSpace(rest[2+end:])
	if rest == "" {
		return r, nil
	}
	if !strings.HasPrefix(asciiUpper(rest), "WHERE ") {
		return nil, fmt.Errorf("%w: unexpected %q", ErrSyntax, rest)
	}
	field, value, ok := strings.Cut(strings.TrimSpace(rest[len("WHERE "):]), "=")
	field, value = strings.TrimSpace(field), strings.TrimSpace(value)
	if !ok || len(value) < 2 || value[0] != '\'' || value[len(value)-1] != '\'' || !isPath(field) {
		return nil, fmt.Errorf("%w: WHERE supports <field> = '<value>' only: %q", ErrSyntax, rest)
	}
	r.where = &whereClause{path: strings.Split(field, "."), value: value[1 : len(value)-1]}
	return r, nil
}

// MustParse is Parse for statements fixed in code.
func MustParse(sql string) *Rule {
	r, err := Parse(sql)
	if err != nil {
		panic(err)
	}
	return r
}

func (r *Rule) parseSelect(list string) error {
	if list == "*" {
		r.star = true
		return nil
	}
	for raw := range strings.SplitSeq(list, ",") {
		item := strings.TrimSpace(raw)
		var it selectItem
		expr, alias := item, ""
		if i := strings.Index(asciiUpper(item), " AS "); i >= 0 {
			expr, alias = strings.TrimSpace(item[:i]), strings.TrimSpace(item[i+4:])
			if !isIdent(alias) {
				return fmt.Errorf("%w: bad alias %q", ErrSyntax, alias)
			}
		}
		lower := strings.ToLower(asciiUpper(expr)) // ASCII-only case folding keeps offsets
		switch {
		case lower == "timestamp()":
			it.kind = "timestamp"
		case lower == "newuuid()":
			it.kind = "newuuid"
		case lower == "clientid()":
			it.kind = "clientid"
		case lower == "principal()":
			it.kind = "principal"
		case lower == "topic()":
			it.kind = "topic"
		case strings.HasPrefix(lower, "topic(") && strings.HasSuffix(lower, ")"):
			n, err := strconv.Atoi(strings.TrimSpace(expr[len("topic(") : len(expr)-1]))
			if err != nil || n < 1 {
				return fmt.Errorf("%w: bad %q", ErrSyntax, expr)
			}
			it.kind, it.n = "topic", n
		case isPath(expr):
			it.kind, it.path = "field", strings.Split(expr, ".")
		default:
			return fmt.Errorf("%w: unsupported select item %q", ErrSyntax, expr)
		}
		if alias == "" {
			switch it.kind {
			case "field":
				alias = it.path[len(it.path)-1]
			default:
				return fmt.Errorf("%w: %q needs an AS alias", ErrSyntax, expr)
			}
		}
		it.alias = alias
		r.fields = append(r.fields, it)
	}
	if len(r.fields) == 0 {
		return fmt.Errorf("%w: empty select list", ErrSyntax)
	}
	return nil
}

// asciiUpper upper-cases ASCII letters only, keeping byte offsets.
func asciiUpper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		if !(c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || i > 0 && '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

func isPath(s string) bool {
	for p := range strings.SplitSeq(s, ".") {
		if !isIdent(p) {
			return false
		}
	}
	return true
}

// Filter is the rule's topic filter.
func (r *Rule) Filter() string { return r.filter }

// Evaluate applies the rule to m. It returns the JSON document the rule's
// action receives and whether the rule fired (topic matched and WHERE held).
func (r *Rule) Evaluate(m Message) ([]byte, bool, error) {
	if !Match(r.filter, m.Topic) {
		return nil, false, nil
	}
	obj, isObj := decodeObject(m.Payload)
	if r.where != nil {
		v, ok := lookup(obj, r.where.path)
		s, isStr := v.(string)
		if !isObj || !ok || !isStr || s != r.where.value {
			return nil, false, nil
		}
	}
	if r.star {
		if !isObj {
			// SELECT * of a non-JSON payload: AWS passes the bytes on; the
			// actions mriot uses need JSON, so report it.
			return nil, true, fmt.Errorf("rule %q: payload on %s is not a JSON object", r.SQL, m.Topic)
		}
		return bytes.Clone(m.Payload), true, nil
	}
	var buf bytes.Buffer
	buf.WriteByte('{')
	first := true
	put := func(key string, raw []byte) {
		if !first {
			buf.WriteByte(',')
		}
		first = false
		k, _ := json.Marshal(key)
		buf.Write(k)
		buf.WriteByte(':')
		buf.Write(raw)
	}
	for _, it := range r.fields {
		switch it.kind {
		case "field":
			raw, ok := lookupRaw(obj, it.path)
			if ok {
				put(it.alias, raw)
			}
		case "topic":
			seg := m.Topic
			if it.n > 0 {
				parts := strings.Split(m.Topic, "/")
				if it.n > len(parts) {
					continue
				}
				seg = parts[it.n-1]
			}
			b, _ := json.Marshal(seg)
			put(it.alias, b)
		case "timestamp":
			t := m.Time
			if t.IsZero() {
				t = time.Now()
			}
			put(it.alias, []byte(strconv.FormatInt(t.UnixMilli(), 10)))
		case "newuuid":
			id := r.newUUID()
			b, _ := json.Marshal(id)
			put(it.alias, b)
		case "clientid":
			b, _ := json.Marshal(m.ClientID)
			put(it.alias, b)
		case "principal":
			b, _ := json.Marshal(m.Principal)
			put(it.alias, b)
		}
	}
	buf.WriteByte('}')
	return buf.Bytes(), true, nil
}

func (r *Rule) newUUID() string {
	if r.NewUUID != nil {
		return r.NewUUID()
	}
	return NewUUID()
}

// NewUUID returns a random (version 4) UUID. Its bits come from
// math/rand/v2's runtime source (ChaCha8, seeded per thread from the
// system's entropy): ids, not secrets, and no system call per id (this runs
// per message: newuuid() and each invocation's request id).
func NewUUID() string {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(b[8:], rand.Uint64())
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var out [36]byte
	hex.Encode(out[0:8], b[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], b[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], b[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], b[8:10])
	out[23] = '-'
	hex.Encode(out[24:], b[10:16])
	return string(out[:])
}

// decodeObject decodes payload as a JSON object with raw values.
func decodeObject(payload []byte) (map[string]json.RawMessage, bool) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(payload, &obj); err != nil || obj == nil {
		return nil, false
	}
	return obj, true
}

func lookupRaw(obj map[string]json.RawMessage, path []string) (json.RawMessage, bool) {
	cur := obj
	for i, p := range path {
		raw, ok := cur[p]
		if !ok {
			return nil, false
		}
		if i == len(path)-1 {
			return raw, true
		}
		var next map[string]json.RawMessage
		if err := json.Unmarshal(raw, &next); err != nil {
			return nil, false
		}
		cur = next
	}
	return nil, false
}

func lookup(obj map[string]json.RawMessage, path []string) (any, bool) {
	raw, ok := lookupRaw(obj, path)
	if !ok {
		return nil, false
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, false
	}
	return v, true
}

// ValidateFilter checks an MQTT topic filter: '#' only last and alone in its
// level, '+' alone in its level.
func ValidateFilter(filter string) error {
	if filter == "" {
		return fmt.Errorf("%w: empty topic filter", ErrSyntax)
	}
	levels := strings.Split(filter, "/")
	for i, l := range levels {
		switch {
		case l == "#" && i != len(levels)-1:
			return fmt.Errorf("%w: '#' must be the last level of %q", ErrSyntax, filter)
		case l != "#" && l != "+" && strings.ContainsAny(l, "#+"):
			return fmt.Errorf("%w: wildcard inside a level of %q", ErrSyntax, filter)
		}
	}
	return nil
}

// Match reports whether topic matches the MQTT topic filter.
// As MQTT requires, a filter that starts with a wildcard does not match a
// topic that starts with '$' (such as $aws/...).
func Match(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "#") || strings.HasPrefix(filter, "+")) {
		return false
	}
	f := strings.Split(filter, "/")
	t := strings.Split(topic, "/")
	for i, l := range f {
		if l == "#" {
			return true
		}
		if i >= len(t) {
			return false
		}
		if l != "+" && l != t[i] {
			return false
		}
	}
	return len(f) == len(t)
}
