package awsconf

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func mapEnv(m map[string]string) Env {
	return Env{Lookup: func(name string) (string, bool) { v, ok := m[name]; return v, ok }}
}

func TestEnv(t *testing.T) {
	env := mapEnv(map[string]string{
		"TABLE": "devices", "BLANK": "  ", "N": "42", "BADN": "4x2",
		"D": "1m30s", "BADD": "90", "B": "TRUE", "BADB": "maybe",
		"L": " eu-west-1, ,us-east-1 ,", "EMPTYL": " , ",
	})
	tests := []struct {
		name string
		got  func() (any, error)
		want any
		err  bool
	}{
		{"MustString set", func() (any, error) { return env.MustString("TABLE") }, "devices", false},
		{"MustString unset", func() (any, error) { return env.MustString("NOPE") }, "", true},
		{"MustString blank", func() (any, error) { return env.MustString("BLANK") }, "", true},
		{"String set", func() (any, error) { return env.String("TABLE", "x"), nil }, "devices", false},
		{"String default", func() (any, error) { return env.String("NOPE", "x"), nil }, "x", false},
		{"Int set", func() (any, error) { return env.Int("N", 1) }, 42, false},
		{"Int default", func() (any, error) { return env.Int("NOPE", 7) }, 7, false},
		{"Int malformed", func() (any, error) { return env.Int("BADN", 7) }, 0, true},
		{"Duration set", func() (any, error) { return env.Duration("D", time.Second) }, 90 * time.Second, false},
		{"Duration default", func() (any, error) { return env.Duration("NOPE", time.Second) }, time.Second, false},
		{"Duration malformed", func() (any, error) { return env.Duration("BADD", time.Second) }, time.Duration(0), true},
		{"Bool set", func() (any, error) { return env.Bool("B", false) }, true, false},
		{"Bool default", func() (any, error) { return env.Bool("NOPE", true) }, true, false},
		{"Bool malformed", func() (any, error) { return env.Bool("BADB", false) }, false, true},
		{"List set", func() (any, error) { return env.List("L", nil), nil }, []string{"eu-west-1", "us-east-1"}, false},
		{"List default", func() (any, error) { return env.List("NOPE", []string{"a"}), nil }, []string{"a"}, false},
		{"MustList set", func() (any, error) { return env.MustList("L") }, []string{"eu-west-1", "us-east-1"}, false},
		{"MustList no items", func() (any, error) { return env.MustList("EMPTYL") }, []string(nil), true},
		{"MustList unset", func() (any, error) { return env.MustList("NOPE") }, []string(nil), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.got()
			if tt.err {
				var ee *EnvError
				if !errors.As(err, &ee) {
					t.Fatalf("err = %v, want an *EnvError", err)
				}
				if !strings.Contains(err.Error(), ee.Name) || ee.Name == "" {
					t.Errorf("error %q does not name the variable", err)
				}
			} else if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

func TestEnvErrorNamesVariableAndValue(t *testing.T) {
	_, err := mapEnv(map[string]string{"MAX_ATTEMPTS": "lots"}).Int("MAX_ATTEMPTS", 5)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"MAX_ATTEMPTS", `"lots"`, "integer"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

// The zero Env reads the process environment.
func TestProcessEnv(t *testing.T) {
	t.Setenv("MRIOT_TEST_REGIONS", "a,b")
	t.Setenv("MRIOT_TEST_N", "3")
	var env Env
	if got := env.List("MRIOT_TEST_REGIONS", nil); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Errorf("List = %v", got)
	}
	if n, err := env.Int("MRIOT_TEST_N", 0); err != nil || n != 3 {
		t.Errorf("Int = %d, %v", n, err)
	}
	if _, err := env.MustString("MRIOT_TEST_UNSET_VARIABLE"); err == nil {
		t.Error("MustString of an unset variable succeeded")
	}
}
