package rie

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestLogicalID(t *testing.T) {
	for fn, want := range map[string]string{"jitr": "JitrFunction", "replicate": "ReplicateFunction", "api": "ApiFunction", "": ""} {
		if got := LogicalID(fn); got != want {
			t.Errorf("LogicalID(%q) = %q, want %q", fn, got, want)
		}
	}
}

func TestLoadEnv(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		id      string
		want    map[string]string
		wantErr string
	}{
		{"function variables", `{"JitrFunction":{"A":"1","B":"x"},"IngestFunction":{"C":"2"}}`, "JitrFunction", map[string]string{"A": "1", "B": "x"}, ""},
		{"Parameters apply below the function's own", `{"Parameters":{"A":"p","P":"q"},"JitrFunction":{"A":"1"}}`, "JitrFunction", map[string]string{"A": "1", "P": "q"}, ""},
		{"numbers and booleans as SAM accepts", `{"JitrFunction":{"N":8192,"B":true}}`, "JitrFunction", map[string]string{"N": "8192", "B": "true"}, ""},
		{"missing function", `{"IngestFunction":{}}`, "JitrFunction", nil, "no entry for JitrFunction"},
		{"object value", `{"JitrFunction":{"A":{"x":1}}}`, "JitrFunction", nil, "want a string"},
		{"not the env-vars format", `["A=1"]`, "JitrFunction", nil, "want {"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "env.json")
			if err := os.WriteFile(p, []byte(tt.file), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := LoadEnv(p, tt.id)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("LoadEnv = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestMergeEnv(t *testing.T) {
	got := mergeEnv([]string{"A=1", "B=2", "PATH=/bin"}, map[string]string{"B": "3", "C": ""})
	slices.Sort(got)
	want := []string{"A=1", "B=3", "C=", "PATH=/bin"}
	if !slices.Equal(got, want) {
		t.Fatalf("mergeEnv = %v, want %v", got, want)
	}
}

func TestFindHonoursOverride(t *testing.T) {
	t.Setenv("AWS_LAMBDA_RIE", filepath.Join(t.TempDir(), "missing"))
	if _, err := Find(""); err == nil {
		t.Fatal("Find with AWS_LAMBDA_RIE naming a missing file succeeded")
	}
	exe := filepath.Join(t.TempDir(), Binary)
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_LAMBDA_RIE", exe)
	if got, err := Find(""); err != nil || got != exe {
		t.Fatalf("Find = %q, %v; want %q", got, err, exe)
	}
}
