package memiot_test

import (
	"context"
	"maps"
	"slices"
	"sync"
	"testing"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/emulator/pki"
	"github.com/mriot/mriot/internal/fake/memiot"
)

// TestOperationsAreWhatTheHookSees calls every API method of the registry
// once and checks that the names its hook sees are exactly Operations: a
// --fault naming an operation the registry never reports would do nothing.
func TestOperationsAreWhatTheHookSees(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	seen := map[string]bool{}
	r := memiot.New("eu-west-1", "123456789012", memiot.WithHook(func(_ context.Context, op string) error {
		mu.Lock()
		defer mu.Unlock()
		seen[op] = true
		return nil
	}))
	root, err := pki.NewRoot("Ops Root", 0)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := root.IssueDevice("ops-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	ca, err := r.RegisterCACertificate(ctx, string(root.CertPEM()), true)
	must("RegisterCACertificate", err)
	_, err = r.DescribeCACertificate(ctx, ca.ID)
	must("DescribeCACertificate", err)
	must("SetCAStatus", r.SetCAStatus(ctx, ca.ID, fleet.CertActive))
	must("CreatePolicy", r.CreatePolicy(ctx, "p", `{"Version":"2012-10-17","Statement":[]}`))
	_, err = r.GetPolicy(ctx, "p")
	must("GetPolicy", err)
	c, err := r.RegisterCertificate(ctx, string(leaf.CertPEM()), fleet.CertPendingActivation)
	must("RegisterCertificate", err)
	_, err = r.DescribeCertificate(ctx, c.ID)
	must("DescribeCertificate", err)
	must("UpdateCertificate", r.UpdateCertificate(ctx, c.ID, fleet.CertActive))
	_, err = r.CreateThing(ctx, "ops-1", nil)
	must("CreateThing", err)
	_, err = r.DescribeThing(ctx, "ops-1")
	must("DescribeThing", err)
	must("UpdateThingAttributes", r.UpdateThingAttributes(ctx, "ops-1", map[string]string{"a": "b"}))
	must("AttachThingPrincipal", r.AttachThingPrincipal(ctx, "ops-1", c.ARN))
	_, err = r.ListThingPrincipals(ctx, "ops-1")
	must("ListThingPrincipals", err)
	must("AttachPolicy", r.AttachPolicy(ctx, "p", c.ARN))
	_, err = r.ListAttachedPolicies(ctx, c.ARN)
	must("ListAttachedPolicies", err)
	_, _, err = r.ListThings(ctx, "", "", 10, "")
	must("ListThings", err)
	_, err = r.ListCACertificates(ctx)
	must("ListCACertificates", err)
	_, _, err = r.ListCertificatesByCA(ctx, ca.ID, 10, "")
	must("ListCertificatesByCA", err)
	must("DetachPolicy", r.DetachPolicy(ctx, "p", c.ARN))
	must("DetachThingPrincipal", r.DetachThingPrincipal(ctx, "ops-1", c.ARN))
	must("DeleteThing", r.DeleteThing(ctx, "ops-1"))
	must("UpdateCertificate", r.UpdateCertificate(ctx, c.ID, fleet.CertInactive))
	must("DeleteCertificate", r.DeleteCertificate(ctx, c.ID))

	got := slices.Sorted(maps.Keys(seen))
	if !slices.Equal(got, memiot.Operations) {
		t.Errorf("the hook saw %v\nOperations are %v", got, memiot.Operations)
	}
	for _, op := range got {
		if !memiot.IsOperation(op) {
			t.Errorf("IsOperation(%q) = false", op)
		}
	}
	if memiot.IsOperation("CreateThings") {
		t.Error("IsOperation accepts a misspelt name")
	}
}
