package memiot

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/fake/journal"
)

// journaled returns a registry restored from a new journal, with a CA
// registered through it, and the journal.
func journaled(t *testing.T) (env, *journal.Memory) {
	t.Helper()
	e := newEnv(t, true)
	j := journal.NewMemory()
	r := New(e.r.Region(), e.r.AccountID())
	if err := r.Restore(j); err != nil {
		t.Fatal(err)
	}
	ca, err := r.RegisterCACertificate(context.Background(), e.ca.CertPEM(), true)
	if err != nil {
		t.Fatal(err)
	}
	e.r, e.caID = r, ca.ID
	return e, j
}

func restored(t *testing.T, e env, j journal.Journal) *Registry {
	t.Helper()
	r := New(e.r.Region(), e.r.AccountID())
	if err := r.Restore(j); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRestore(t *testing.T) {
	ctx := context.Background()
	onboard := func(t *testing.T, e env, name string) fleet.Certificate {
		t.Helper()
		c, created, err := e.r.AutoRegister(ctx, e.devicePEM(t, name))
		if err != nil || !created {
			t.Fatalf("AutoRegister: %v, %v", created, err)
		}
		steps := []error{
			func() error {
				_, err := e.r.CreateThing(ctx, name, map[string]string{"origin": "eu-west-1", "x": "1"})
				return err
			}(),
			e.r.AttachThingPrincipal(ctx, name, c.ARN),
			e.r.AttachPolicy(ctx, "device", c.ARN),
			e.r.UpdateCertificate(ctx, c.ID, fleet.CertActive),
		}
		if err := errors.Join(steps...); err != nil {
			t.Fatal(err)
		}
		return c
	}
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, e env)
	}{
		{"an onboarded device", func(t *testing.T, e env) {
			onboard(t, e, "d1")
		}},
		{"a pending certificate", func(t *testing.T, e env) {
			if _, _, err := e.r.AutoRegister(ctx, e.devicePEM(t, "pending")); err != nil {
				t.Fatal(err)
			}
		}},
		{"a revoked device, detached and removed", func(t *testing.T, e env) {
			c := onboard(t, e, "d2")
			onboard(t, e, "kept")
			if err := errors.Join(
				e.r.UpdateCertificate(ctx, c.ID, fleet.CertRevoked),
				e.r.DetachPolicy(ctx, "device", c.ARN),
				e.r.DetachThingPrincipal(ctx, "d2", c.ARN),
				e.r.DeleteCertificate(ctx, c.ID),
				e.r.DeleteThing(ctx, "d2"),
			); err != nil {
				t.Fatal(err)
			}
		}},
		{"attributes merged, a CA made inactive, a policy replaced", func(t *testing.T, e env) {
			onboard(t, e, "d3")
			if err := errors.Join(
				e.r.UpdateThingAttributes(ctx, "d3", map[string]string{"x": "", "y": "2"}),
				e.r.SetCAStatus(ctx, e.caID, fleet.CertInactive),
				e.r.ReplacePolicy(ctx, "device", `{"Version":"2012-10-17","Statement":[]}`),
			); err != nil {
				t.Fatal(err)
			}
		}},
		{"a certificate registered by API, and a second CA", func(t *testing.T, e env) {
			if _, err := e.r.RegisterCertificate(ctx, e.devicePEM(t, "api"), ""); err != nil {
				t.Fatal(err)
			}
			other := newEnv(t, false)
			if _, err := e.r.RegisterCACertificate(ctx, other.ca.CertPEM(), false); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, j := journaled(t)
			if err := e.r.CreatePolicy(ctx, "device", `{"Version":"2012-10-17"}`); err != nil {
				t.Fatal(err)
			}
			tc.run(t, e)
			r2 := restored(t, e, j)
			if got, want := r2.Snapshot(), e.r.Snapshot(); !got.Equal(want) {
				t.Errorf("restored state:\n%+v\nwant\n%+v", got, want)
			}
			want, got := e.r.CertificateList(), r2.CertificateList()
			if !slices.EqualFunc(got, want, func(a, b fleet.Certificate) bool {
				return a.ID == b.ID && a.CreatedAt.Equal(b.CreatedAt)
			}) {
				t.Errorf("registration times: %+v, want %+v", got, want)
			}
			if !slices.Equal(r2.CACertificateList(), e.r.CACertificateList()) {
				t.Errorf("CAs: %+v, want %+v", r2.CACertificateList(), e.r.CACertificateList())
			}
			// The restored registry works: it knows its CA's key.
			if _, err := r2.RegisterCertificate(ctx, e.devicePEM(t, "after"), fleet.CertActive); err != nil &&
				!(errors.Is(err, fleet.ErrInvalid) && r2.Snapshot().CACertificates[e.caID].Status == fleet.CertInactive) {
				t.Errorf("register after restore: %v", err)
			}
		})
	}
}

// TestRefusedCallsJournalNothing: a call that changes nothing appends no
// group (no commit for a duplicate event's re-checks).
func TestRefusedCallsJournalNothing(t *testing.T) {
	ctx := context.Background()
	e, j := journaled(t)
	if _, err := e.r.CreateThing(ctx, "d", map[string]string{"a": "1"}); err != nil {
		t.Fatal(err)
	}
	before := j.Appends()
	_, _ = e.r.CreateThing(ctx, "d", map[string]string{"a": "1"}) // exists as it is
	_, _ = e.r.CreateThing(ctx, "d", map[string]string{"a": "2"}) // exists otherwise
	_ = e.r.DeleteThing(ctx, "nothing")
	_ = e.r.UpdateCertificate(ctx, "0000000000000000000000000000000000000000000000000000000000000000", fleet.CertActive)
	_ = e.r.SetCAStatus(ctx, e.caID, fleet.CertActive) // already
	_ = e.r.CreatePolicy(ctx, "p", "{")
	if got := j.Appends(); got != before {
		t.Errorf("%d groups appended by calls that changed nothing", got-before)
	}
}

func TestRestoreRefuses(t *testing.T) {
	e := newEnv(t, true)
	ctx := context.Background()
	c, err := e.r.RegisterCertificate(ctx, e.devicePEM(t, "d"), fleet.CertActive)
	if err != nil {
		t.Fatal(err)
	}
	const p = "iot/eu-west-1/"
	certJSON := string(mustJSON(storedCert{PEM: c.PEM, Status: fleet.CertActive, CA: e.caID}))
	for _, tc := range []struct {
		name, bucket, key, value string
	}{
		{"a certificate that is not JSON", "certificates", c.ID, "{"},
		{"a certificate whose PEM does not parse", "certificates", c.ID, `{"pem":"x","status":"ACTIVE","caCertificateId":"` + e.caID + `"}`},
		{"a certificate under another id", "certificates", e.caID, certJSON},
		{"a certificate of an unknown status", "certificates", c.ID, string(mustJSON(storedCert{PEM: c.PEM, Status: "LOST", CA: e.caID}))},
		{"a certificate without a CA", "certificates", c.ID, string(mustJSON(storedCert{PEM: c.PEM, Status: fleet.CertActive}))},
		{"a CA that is not JSON", "ca-certificates", e.caID, "["},
		{"a CA of status REVOKED", "ca-certificates", e.caID, string(mustJSON(storedCA{PEM: e.ca.CertPEM(), Status: fleet.CertRevoked}))},
		{"a thing with an invalid name", "things", "bad/name", `{}`},
		{"a thing that is not JSON", "things", "d", `{`},
		{"a policy that is not JSON", "policies", "device", `{`},
		{"a policy with an invalid name", "policies", "bad/name", `{}`},
		{"an attachment without a separator", "thing-principals", "d", ""},
		{"a principal of a thing not kept", "thing-principals", "ghost\x00" + c.ARN, ""},
		{"a policy not kept attached", "principal-policies", c.ARN + "\x00ghost", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := journal.NewMemory()
			j.Set(p+tc.bucket, []byte(tc.key), []byte(tc.value))
			r := New("eu-west-1", "111122223333")
			err := r.Restore(j)
			if !errors.Is(err, journal.ErrCorrupt) {
				t.Fatalf("Restore: %v, want ErrCorrupt", err)
			}
			if !r.Snapshot().Equal(New("eu-west-1", "111122223333").Snapshot()) {
				t.Errorf("a failed Restore left state behind: %+v", r.Snapshot())
			}
			if _, err := r.CreateThing(ctx, "t", nil); err != nil {
				t.Fatal(err)
			}
			if j.Appends() != 0 {
				t.Error("a registry whose Restore failed journals")
			}
		})
	}
	t.Run("twice, on a registry in use, or without a journal", func(t *testing.T) {
		if err := New("r", "a").Restore(nil); err == nil {
			t.Error("Restore(nil) succeeded")
		}
		if err := e.r.Restore(journal.NewMemory()); err == nil {
			t.Error("Restore of a registry in use succeeded")
		}
		r := New("r", "a")
		if err := r.Restore(journal.NewMemory()); err != nil {
			t.Fatal(err)
		}
		if err := r.Restore(journal.NewMemory()); err == nil {
			t.Error("a second Restore succeeded")
		}
	})
}

func TestACallThatIsNotKeptFails(t *testing.T) {
	e, j := journaled(t)
	j.Fail(errors.New("no space left on device"))
	ctx := context.Background()
	_, err := e.r.CreateThing(ctx, "d", nil)
	if !errors.Is(err, fleet.ErrUnavailable) {
		t.Errorf("CreateThing: %v, want ErrUnavailable", err)
	}
	if _, _, err := e.r.AutoRegister(ctx, e.devicePEM(t, "d")); !errors.Is(err, fleet.ErrUnavailable) {
		t.Errorf("AutoRegister: %v, want ErrUnavailable", err)
	}
}

// FuzzDecodeStored: no stored bytes make a decoder of the registry's
// records panic.
func FuzzDecodeStored(f *testing.F) {
	f.Add([]byte(`{"pem":"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n","status":"ACTIVE","caCertificateId":"00","createdAt":1}`))
	f.Add([]byte(`{"attributes":{"a":"b"}}`))
	f.Add([]byte(`{"pem":"","status":"INACTIVE","autoRegistration":true}`))
	r := New("eu-west-1", "111122223333")
	f.Fuzz(func(t *testing.T, b []byte) {
		const id = "0000000000000000000000000000000000000000000000000000000000000000"
		if _, err := r.decodeCert(id, b); err == nil {
			t.Fatal("a certificate that cannot have this id decoded")
		}
		if _, err := r.decodeCA(id, b); err == nil {
			t.Fatal("a CA that cannot have this id decoded")
		}
		if th, err := r.decodeThing("d", b); err == nil && th.Attributes == nil {
			t.Fatal("a thing decoded without attributes")
		}
		_, _, _ = splitPair(b)
	})
}
