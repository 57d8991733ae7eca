package main

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/mriot/mriot/internal/aws/awsconf"
	"github.com/mriot/mriot/internal/core/obs"
)

func envOf(m map[string]string) awsconf.Env {
	return awsconf.Env{Lookup: func(k string) (string, bool) { v, ok := m[k]; return v, ok }}
}

func TestReadSettings(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    settings
		wantErr bool
	}{
		{name: "defaults", env: map[string]string{"DATA_TABLE": "data", "AWS_REGION": "eu-west-1"},
			want: settings{DataTable: "data", Region: "eu-west-1", MaxMessageBytes: 8192, RetentionDays: 30}},
		{name: "set", env: map[string]string{"DATA_TABLE": "data", "AWS_REGION": "eu-west-1", "MAX_MESSAGE_BYTES": "1024", "DATA_RETENTION_DAYS": "7", "TRACING": "true"},
			want: settings{DataTable: "data", Region: "eu-west-1", MaxMessageBytes: 1024, RetentionDays: 7, Tracing: true}},
		{name: "no table", env: map[string]string{"AWS_REGION": "eu-west-1"}, wantErr: true},
		{name: "no region", env: map[string]string{"DATA_TABLE": "data"}, wantErr: true},
		{name: "size not a number", env: map[string]string{"DATA_TABLE": "d", "AWS_REGION": "r", "MAX_MESSAGE_BYTES": "big"}, wantErr: true},
		{name: "size zero", env: map[string]string{"DATA_TABLE": "d", "AWS_REGION": "r", "MAX_MESSAGE_BYTES": "0"}, wantErr: true},
		{name: "retention negative", env: map[string]string{"DATA_TABLE": "d", "AWS_REGION": "r", "DATA_RETENTION_DAYS": "-1"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := readSettings(envOf(tt.env))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && s != tt.want {
				t.Errorf("settings %+v, want %+v", s, tt.want)
			}
		})
	}
}

func TestBuild(t *testing.T) {
	h, err := build(aws.Config{Region: "eu-west-1"}, settings{DataTable: "data", Region: "eu-west-1", MaxMessageBytes: 8, RetentionDays: 1}, obs.Discard())
	if err != nil {
		t.Fatal(err)
	}
	// Too large for the configured limit: rejected before any AWS call.
	if _, err := h.Invoke(context.Background(), []byte(`{"message":"0123456789","device":"d","ts":1,"id":"x"}`)); err != nil {
		t.Fatalf("a rejected event was returned for retry: %v", err)
	}
}
