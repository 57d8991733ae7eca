package rules

import (
	"encoding/json"
	"errors"
	"regexp"
	"testing"
	"time"
)

const dataRule = "SELECT message, topic(2) AS device, timestamp() AS ts, newuuid() AS id FROM 'i/+/m'"
const jitrRule = "SELECT * FROM '$aws/events/certificates/registered/#'"

func TestDataRule(t *testing.T) {
	r := MustParse(dataRule)
	r.NewUUID = func() string { return "uuid-1" }
	at := time.UnixMilli(1700000000123)
	tests := []struct {
		name  string
		topic string
		body  string
		fired bool
		want  string
	}{
		{"string message", "i/test_001/m", `{"message": "Hello From Test-001"}`, true,
			`{"message":"Hello From Test-001","device":"test_001","ts":1700000000123,"id":"uuid-1"}`},
		{"object message kept as sent", "i/dev/m", `{"message": {"t": 21.5}, "other": 1}`, true,
			`{"message":{"t": 21.5},"device":"dev","ts":1700000000123,"id":"uuid-1"}`},
		{"non-JSON payload has no message", "i/dev/m", `hello`, true,
			`{"device":"dev","ts":1700000000123,"id":"uuid-1"}`},
		{"other topic", "i/dev/x", `{"message":1}`, false, ""},
		{"deeper topic", "i/dev/m/extra", `{"message":1}`, false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, fired, err := r.Evaluate(Message{Topic: tc.topic, Payload: []byte(tc.body), Time: at})
			if err != nil {
				t.Fatal(err)
			}
			if fired != tc.fired {
				t.Fatalf("fired = %v", fired)
			}
			if fired && string(out) != tc.want {
				t.Errorf("got  %s\nwant %s", out, tc.want)
			}
		})
	}
}

func TestJITRRule(t *testing.T) {
	r := MustParse(jitrRule)
	ev := `{"certificateId":"abc","caCertificateId":"def","timestamp":1,"certificateStatus":"PENDING_ACTIVATION"}`
	out, fired, err := r.Evaluate(Message{Topic: "$aws/events/certificates/registered/def", Payload: []byte(ev)})
	if err != nil || !fired || string(out) != ev {
		t.Fatalf("out %s fired %v err %v", out, fired, err)
	}
	if _, fired, _ := r.Evaluate(Message{Topic: "i/x/m", Payload: []byte(ev)}); fired {
		t.Error("fired on a device topic")
	}
}

func TestWhereClause(t *testing.T) {
	r := MustParse("SELECT a.b AS v FROM 't/#' WHERE kind = 'x'")
	out, fired, err := r.Evaluate(Message{Topic: "t/1", Payload: []byte(`{"kind":"x","a":{"b":[1,2]}}`)})
	if err != nil || !fired || string(out) != `{"v":[1,2]}` {
		t.Fatalf("out %s fired %v err %v", out, fired, err)
	}
	if _, fired, _ := r.Evaluate(Message{Topic: "t/1", Payload: []byte(`{"kind":"y"}`)}); fired {
		t.Error("fired although WHERE fails")
	}
}

func TestParseErrors(t *testing.T) {
	for _, sql := range []string{
		"", "SELECT", "SELECT * FROM", "SELECT * FROM t", "SELECT * FROM 'a/#/b'", "SELECT * FROM 'a/b+'",
		"SELECT timestamp() FROM 'a'", "SELECT 1+1 AS x FROM 'a'", "SELECT x AS 1y FROM 'a'",
		"SELECT * FROM 'a' ORDER BY x", "SELECT * FROM 'a' WHERE x > 1", "SELECT topic(0) AS t FROM 'a'",
	} {
		if _, err := Parse(sql); !errors.Is(err, ErrSyntax) {
			t.Errorf("Parse(%q) = %v, want ErrSyntax", sql, err)
		}
	}
}

func TestMatch(t *testing.T) {
	tests := []struct {
		filter, topic string
		want          bool
	}{
		{"i/+/m", "i/a/m", true},
		{"i/+/m", "i//m", true},
		{"i/+/m", "i/a/b/m", false},
		{"a/#", "a", true},
		{"a/#", "a/b/c", true},
		{"#", "a/b", true},
		{"#", "$aws/events/x", false},
		{"+/events/x", "$aws/events/x", false},
		{"$aws/events/certificates/registered/#", "$aws/events/certificates/registered/abc", true},
		{"a/b", "a/b/c", false},
	}
	for _, tc := range tests {
		if got := Match(tc.filter, tc.topic); got != tc.want {
			t.Errorf("Match(%q, %q) = %v", tc.filter, tc.topic, got)
		}
	}
}

func TestNewUUID(t *testing.T) {
	shape := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	seen := map[string]bool{}
	for range 1000 {
		u := NewUUID()
		if !shape.MatchString(u) || seen[u] {
			t.Fatalf("uuid %s: not a version 4 UUID, or seen before", u)
		}
		seen[u] = true
	}
}

func FuzzEvaluate(f *testing.F) {
	f.Add("i/dev/m", []byte(`{"message":"x"}`))
	f.Add("i/dev/m", []byte(`[1,2]`))
	r := MustParse(dataRule)
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		out, fired, err := r.Evaluate(Message{Topic: topic, Payload: payload, Time: time.UnixMilli(1)})
		if err != nil || !fired {
			return
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(out, &m); err != nil {
			t.Fatalf("rule output is not a JSON object: %s", out)
		}
	})
}

func FuzzParse(f *testing.F) {
	f.Add(dataRule)
	f.Add(jitrRule)
	f.Fuzz(func(t *testing.T, sql string) {
		_, _ = Parse(sql) // must not panic
	})
}
