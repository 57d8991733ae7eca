// Package wiringtest helps the functions' tests check their settings against
// the environment the deployment gives them: events/env.json, which
// internal/testkit/deploytest keeps equal to template.yaml's variables.
package wiringtest

import (
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"testing"

	"github.com/mriot/mriot/internal/aws/awsconf"
)

// DeployedEnv returns the variables events/env.json gives the function
// logicalID (e.g. JitrFunction), with AWS_REGION set as Lambda sets it and
// the variables of drop removed.
func DeployedEnv(t testing.TB, logicalID, region string, drop ...string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root(t), "events", "env.json"))
	if err != nil {
		t.Fatal(err)
	}
	var file map[string]map[string]string
	if err := json.Unmarshal(b, &file); err != nil {
		t.Fatalf("events/env.json: %v", err)
	}
	vars, ok := file[logicalID]
	if !ok {
		t.Fatalf("events/env.json has no %s", logicalID)
	}
	env := map[string]string{"AWS_REGION": region}
	maps.Copy(env, vars)
	for _, k := range drop {
		delete(env, k)
	}
	return env
}

// Env reads m as the environment.
func Env(m map[string]string) awsconf.Env {
	return awsconf.Env{Lookup: func(k string) (string, bool) { v, ok := m[k]; return v, ok }}
}

// root is the module's root (the directory of go.mod) above the test's
// working directory.
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
