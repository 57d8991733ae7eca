package awsiot_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/aws-sdk-go-v2/service/iot/types"

	"github.com/mriot/mriot/internal/aws/awsiot"
	"github.com/mriot/mriot/internal/core/contract"
	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/emulator/pki"
	"github.com/mriot/mriot/internal/testkit/contracttest"
	"github.com/mriot/mriot/internal/testkit/motoserver"
)

// The adapter implements the port the contract suite tests.
var _ contract.Registry = (*awsiot.Adapter)(nil)

func TestMain(m *testing.M) { os.Exit(motoserver.Main(m)) }

// motoQuirks are moto 5.2's departures from AWS IoT that the contract suite
// meets. The adapter follows AWS; the suite notes each one at its assertion.
var motoQuirks = contracttest.Quirks{
	NoCACertificateIDInDescribe: true, // DescribeCertificate has no caCertificateId
	CreateThingReplaces:         true, // duplicate CreateThing replaces the thing
	RegisterWithoutCA:           true, // registers certificates of unregistered CAs
	RevokedCanBeReactivated:     true, // REVOKED -> ACTIVE is let through
	// HTTP 500 on a PEM it cannot parse.
	MalformedCertificateServerError: true,
	CACertificateARNIsCert:          true, // CA ARN is ...:cert/<id>
	NoCAAutoRegistration:            true, // allowAutoRegistration is ignored
	DetachNotAttachedIsNotFound:     true, // detaching what is not attached is a 404
	ThingNamesUnchecked:             true, // any non-empty thing name is accepted
	// HTTP 500: "The list_ca_certificates action has not been implemented".
	ListCACertificatesUnimplemented: true,
	// The CA is linked only through caCertificatePem, which is not sent.
	CertificatesByCAUnlinked: true,
	CertificatesByCAUnpaged:  true, // pageSize and marker are ignored
}

// newMotoEnv is a fresh registry: its own moto account, region eu-west-1.
func newMotoEnv(t *testing.T) contracttest.RegistryEnv {
	s := motoserver.Start(t)
	cfg := s.Config("eu-west-1")
	return contracttest.RegistryEnv{
		Registry:     awsiot.New(iot.NewFromConfig(cfg)),
		RegisterCA:   func(t *testing.T, caPEM string) string { return motoserver.RegisterCA(t, cfg, caPEM) },
		CreatePolicy: func(t *testing.T, name, doc string) { motoserver.CreatePolicy(t, cfg, name, doc) },
		Quirks:       motoQuirks,
	}
}

func TestRegistryContractOnMoto(t *testing.T) {
	contracttest.Registry(t, newMotoEnv)
}

// Adapter behaviour against moto's HTTP API beyond the contract.

func TestAdapterOnMoto(t *testing.T) {
	s := motoserver.Start(t)
	cfg := s.Config("ap-northeast-1")
	a := awsiot.New(iot.NewFromConfig(cfg))
	ctx := context.Background()

	root, err := pki.NewRoot("adapter root", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := a.RegisterCACertificate(ctx, root.CertPEM())
	if err != nil {
		t.Fatalf("RegisterCACertificate: %v", err)
	}
	if ca.ID != fleet.CertificateID(root.Cert) || ca.Status != fleet.CertActive {
		t.Errorf("RegisterCACertificate = %+v, want id %s, ACTIVE", ca, fleet.CertificateID(root.Cert))
	}
	desc, err := a.DescribeCACertificate(ctx, ca.ID)
	if err != nil || desc.Status != fleet.CertActive || desc.PEM == "" {
		t.Errorf("DescribeCACertificate = %+v, %v", desc, err)
	}
	if _, err := a.RegisterCACertificate(ctx, "not a certificate"); err == nil {
		t.Error("RegisterCACertificate of garbage succeeded")
	}

	// Several principals on one thing, all listed.
	thing := "multi-principal"
	if _, err := a.CreateThing(ctx, thing, map[string]string{"k": "v"}); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for i := range 4 {
		leaf, err := root.IssueDevice(fmt.Sprintf("%s-%d", thing, i), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		c, err := a.RegisterCertificate(ctx, leaf.CertPEM(), fleet.CertActive)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.AttachThingPrincipal(ctx, thing, c.ARN); err != nil {
			t.Fatal(err)
		}
		want[c.ARN] = true
	}
	got, err := a.ListThingPrincipals(ctx, thing)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Errorf("ListThingPrincipals = %d principals, want %d", len(got), len(want))
	}
	for _, arn := range got {
		if !want[arn] {
			t.Errorf("unexpected principal %s", arn)
		}
	}

	// ListCertificatesByCA over the wire. moto links a certificate to its CA
	// only when RegisterCertificate carries caCertificatePem (the suite's
	// CertificatesByCAUnlinked), so this one is registered with it; the four
	// above are not listed.
	leaf, err := root.IssueDevice("by-ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	registering := time.Now()
	reg, err := iot.NewFromConfig(cfg).RegisterCertificate(ctx, &iot.RegisterCertificateInput{
		CertificatePem: aws.String(leaf.CertPEM()), CaCertificatePem: aws.String(root.CertPEM()),
		Status: types.CertificateStatusActive,
	})
	if err != nil {
		t.Fatal(err)
	}
	certs, next, err := a.ListCertificatesByCA(ctx, ca.ID, 10, "")
	if err != nil {
		t.Fatalf("ListCertificatesByCA: %v", err)
	}
	if len(certs) != 1 || next != "" {
		t.Fatalf("ListCertificatesByCA = %+v, %q; want the one linked certificate", certs, next)
	}
	c := certs[0]
	if c.ID != aws.ToString(reg.CertificateId) || c.ARN != aws.ToString(reg.CertificateArn) ||
		c.Status != fleet.CertActive || c.CACertificateID != ca.ID || c.PEM != "" {
		t.Errorf("listed %+v, want id %s, ACTIVE, CA %s", c, aws.ToString(reg.CertificateId), ca.ID)
	}
	if c.CreatedAt.Before(registering.Add(-time.Minute)) || c.CreatedAt.After(time.Now().Add(time.Minute)) {
		t.Errorf("CreatedAt %v, want about %v", c.CreatedAt, registering)
	}

	// A missing thing deletes fine; a thing with principals is a conflict.
	if err := a.DeleteThing(ctx, "never-created"); err != nil {
		t.Errorf("DeleteThing of a missing thing: %v", err)
	}
	if err := a.DeleteThing(ctx, thing); !errors.Is(err, fleet.ErrDeleteConflict) {
		t.Errorf("DeleteThing with principals: %v, want ErrDeleteConflict", err)
	}
	// An empty name is refused by the SDK before any request.
	if _, err := a.DescribeThing(ctx, ""); !errors.Is(err, fleet.ErrInvalid) {
		t.Errorf("DescribeThing of an empty name: %v, want ErrInvalid", err)
	}
}

func TestUnreachableEndpointIsUnavailable(t *testing.T) {
	// A port nobody listens on: the SDK retries, gives up, and the adapter
	// reports a transient failure.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cfg := aws.Config{
		Region:       "eu-west-1",
		Credentials:  credentials.NewStaticCredentialsProvider("AKID", "secret", ""),
		BaseEndpoint: aws.String("http://" + addr),
		Retryer:      func() aws.Retryer { return retry.AddWithMaxBackoffDelay(retry.NewStandard(), time.Millisecond) },
	}
	_, err = awsiot.New(iot.NewFromConfig(cfg)).DescribeThing(context.Background(), "t")
	if !errors.Is(err, fleet.ErrUnavailable) || !fleet.IsTransient(err) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
}
