package main

import (
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/testkit/wiringtest"
)

// TestReadSettings: the environment the deployment gives setup configures it;
// without AWS_REGION the error names it.
func TestReadSettings(t *testing.T) {
	s, err := readSettings(wiringtest.Env(wiringtest.DeployedEnv(t, "SetupFunction", "eu-west-1")))
	if err != nil || s.Region != "eu-west-1" {
		t.Fatalf("settings %+v, %v", s, err)
	}
	_, err = readSettings(wiringtest.Env(wiringtest.DeployedEnv(t, "SetupFunction", "eu-west-1", "AWS_REGION")))
	if err == nil || !strings.Contains(err.Error(), "AWS_REGION") {
		t.Errorf("without AWS_REGION: err = %v, want one naming it", err)
	}
}

// TestBuild wires the handler over SDK clients of the settings' region (no
// call is made).
func TestBuild(t *testing.T) {
	h := build(aws.Config{Region: "us-east-1"}, settings{Region: "eu-west-1"}, obs.Discard())
	if h.IoT == nil || h.Tables == nil || h.Region != "eu-west-1" || h.Log == nil {
		t.Fatalf("handler %+v", h)
	}
}
