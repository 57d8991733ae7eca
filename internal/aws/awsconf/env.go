package awsconf

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// EnvError says which environment variable is missing or malformed.
type EnvError struct {
	Name   string // the variable
	Value  string // its value, if set
	Reason string
	Err    error // the parse error, if any
}

func (e *EnvError) Error() string {
	msg := "environment variable " + e.Name + ": " + e.Reason
	if e.Value != "" {
		msg += fmt.Sprintf(" (got %q)", e.Value)
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns the parse error.
func (e *EnvError) Unwrap() error { return e.Err }

// Env reads configuration from environment variables. Its zero value reads
// the process environment; Lookup replaces it (tests, or a map).
type Env struct {
	Lookup func(name string) (string, bool)
}

func (e Env) get(name string) (string, bool) {
	lookup := e.Lookup
	if lookup == nil {
		lookup = os.LookupEnv
	}
	v, ok := lookup(name)
	v = strings.TrimSpace(v)
	return v, ok && v != ""
}

// MustString returns the variable's value; unset or empty is an error.
func (e Env) MustString(name string) (string, error) {
	v, ok := e.get(name)
	if !ok {
		return "", &EnvError{Name: name, Reason: "required but not set"}
	}
	return v, nil
}

// String returns the variable's value, or def when unset or empty.
func (e Env) String(name, def string) string {
	if v, ok := e.get(name); ok {
		return v
	}
	return def
}

// Int returns the variable as a decimal integer, or def when unset.
func (e Env) Int(name string, def int) (int, error) {
	v, ok := e.get(name)
	if !ok {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, &EnvError{Name: name, Value: v, Reason: "not an integer", Err: err}
	}
	return n, nil
}

// Duration returns the variable as a Go duration ("30s", "5m"), or def when
// unset.
func (e Env) Duration(name string, def time.Duration) (time.Duration, error) {
	v, ok := e.get(name)
	if !ok {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, &EnvError{Name: name, Value: v, Reason: "not a duration like 30s or 5m", Err: err}
	}
	return d, nil
}

// Bool returns the variable as a boolean (true/false/1/0/t/f, any case), or
// def when unset.
func (e Env) Bool(name string, def bool) (bool, error) {
	v, ok := e.get(name)
	if !ok {
		return def, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, &EnvError{Name: name, Value: v, Reason: "not a boolean (true or false)", Err: err}
	}
	return b, nil
}

// List returns the variable's comma-separated items, trimmed, empty items
// dropped; def when unset.
func (e Env) List(name string, def []string) []string {
	v, ok := e.get(name)
	if !ok {
		return def
	}
	var out []string
	for item := range strings.SplitSeq(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// MustList is List where an unset variable, or one with no items, is an error.
func (e Env) MustList(name string) ([]string, error) {
	items := e.List(name, nil)
	if len(items) == 0 {
		v, _ := e.get(name)
		return nil, &EnvError{Name: name, Value: v, Reason: "required: a comma-separated list"}
	}
	return items, nil
}
