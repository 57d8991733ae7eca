package motoserver

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	iottypes "github.com/aws/aws-sdk-go-v2/service/iot/types"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/emulator/pki"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

func TestCertificateIDIsSHA256OfDER(t *testing.T) {
	s := Start(t)
	cfg := s.Config("eu-west-1")
	ca, err := pki.NewRoot("moto test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caID := RegisterCA(t, cfg, ca.CertPEM())
	if want := fleet.CertificateID(ca.Cert); caID != want {
		t.Errorf("CA certificate id = %s, want SHA-256 of DER %s", caID, want)
	}
	dev, err := ca.IssueDevice("thing-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	out, err := iot.NewFromConfig(cfg).RegisterCertificate(ctx, &iot.RegisterCertificateInput{
		CertificatePem: aws.String(dev.CertPEM()), Status: iottypes.CertificateStatusActive,
	})
	if err != nil {
		t.Fatalf("register certificate: %v", err)
	}
	if got, want := aws.ToString(out.CertificateId), fleet.CertificateID(dev.Cert); got != want {
		t.Errorf("certificate id = %s, want SHA-256 of DER %s", got, want)
	}
}

func TestAccountsAreIsolated(t *testing.T) {
	a, b := Start(t), Start(t)
	if a.AccountID == b.AccountID {
		t.Fatalf("two handles share account %s", a.AccountID)
	}
	if a.URL != b.URL {
		t.Errorf("handles of one binary use two servers: %s and %s", a.URL, b.URL)
	}
	CreatePolicy(t, a.Config("us-east-1"), "p", `{"Version":"2012-10-17","Statement":[]}`)
	_, err := iot.NewFromConfig(b.Config("us-east-1")).GetPolicy(context.Background(), &iot.GetPolicyInput{PolicyName: aws.String("p")})
	var nf *iottypes.ResourceNotFoundException
	if !errors.As(err, &nf) {
		t.Fatalf("policy of account %s visible from account %s: err = %v", a.AccountID, b.AccountID, err)
	}
	if _, err := iot.NewFromConfig(a.Config("us-east-1")).GetPolicy(context.Background(), &iot.GetPolicyInput{PolicyName: aws.String("p")}); err != nil {
		t.Fatalf("get policy in its own account: %v", err)
	}
}

func TestCreateTables(t *testing.T) {
	s := Start(t)
	cfg := s.Config("us-west-2")
	CreateTables(t, cfg, "inv", "data")
	db := dynamodb.NewFromConfig(cfg)
	ctx := context.Background()
	tests := []struct {
		table  string
		keys   []string
		stream ddbtypes.StreamViewType
	}{
		{"inv", []string{"ThingName"}, ddbtypes.StreamViewTypeNewImage},
		{"data", []string{"PK", "SK"}, ddbtypes.StreamViewTypeNewAndOldImages},
	}
	for _, tt := range tests {
		out, err := db.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(tt.table)})
		if err != nil {
			t.Fatalf("describe %s: %v", tt.table, err)
		}
		var keys []string
		for _, k := range out.Table.KeySchema {
			keys = append(keys, aws.ToString(k.AttributeName))
		}
		if len(keys) != len(tt.keys) || keys[0] != tt.keys[0] || keys[len(keys)-1] != tt.keys[len(tt.keys)-1] {
			t.Errorf("%s key schema = %v, want %v", tt.table, keys, tt.keys)
		}
		if spec := out.Table.StreamSpecification; spec == nil || spec.StreamViewType != tt.stream {
			t.Errorf("%s stream = %+v, want %s", tt.table, spec, tt.stream)
		}
	}
	ttl, err := db.DescribeTimeToLive(ctx, &dynamodb.DescribeTimeToLiveInput{TableName: aws.String("data")})
	if err != nil {
		t.Fatal(err)
	}
	if d := ttl.TimeToLiveDescription; d == nil || aws.ToString(d.AttributeName) != "ExpiresAt" {
		t.Errorf("TTL = %+v, want on ExpiresAt", d)
	}
}

func TestMissingPythonSkipsOrFails(t *testing.T) {
	// Launching with a python that does not exist must report errNotInstalled,
	// which Start turns into a skip (or a failure under CI=true).
	t.Setenv(PythonEnv, "/nonexistent/python3")
	_, err := launch()
	if !errors.Is(err, errNotInstalled) {
		t.Fatalf("launch with a missing python: err = %v, want errNotInstalled", err)
	}
}

func TestPythonWithoutMotoIsNotInstalled(t *testing.T) {
	// A python that cannot import moto (isolated mode, no site packages).
	dir := t.TempDir()
	script := dir + "/python-without-moto"
	if err := os.WriteFile(script, []byte("#!/bin/sh\nexec python3 -I -S \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv(PythonEnv, script)
	_, err := launch()
	if !errors.Is(err, errNotInstalled) {
		t.Fatalf("launch with a python without moto: err = %v, want errNotInstalled", err)
	}
}
