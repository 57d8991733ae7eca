package memiot

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/emulator/pki"
)

type env struct {
	r    *Registry
	ca   *pki.Authority
	caID string
}

func newEnv(t *testing.T, autoReg bool, opts ...Option) env {
	t.Helper()
	root, err := pki.NewRoot("root", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := root.NewIntermediate("intermediate", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	r := New("eu-west-1", "111122223333", opts...)
	c, err := r.RegisterCACertificate(context.Background(), ca.CertPEM(), autoReg)
	if err != nil {
		t.Fatal(err)
	}
	return env{r: r, ca: ca, caID: c.ID}
}

func (e env) devicePEM(t *testing.T, name string) string {
	t.Helper()
	leaf, err := e.ca.IssueDevice(name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return leaf.CertPEM()
}

func TestARNs(t *testing.T) {
	e := newEnv(t, true)
	ctx := context.Background()
	c, err := e.r.RegisterCertificate(ctx, e.devicePEM(t, "d1"), fleet.CertActive)
	if err != nil {
		t.Fatal(err)
	}
	th, err := e.r.CreateThing(ctx, "d1", nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ got, want string }{
		{c.ARN, "arn:aws:iot:eu-west-1:111122223333:cert/" + c.ID},
		{th.ARN, "arn:aws:iot:eu-west-1:111122223333:thing/d1"},
		{e.r.CACertificateARN(e.caID), "arn:aws:iot:eu-west-1:111122223333:cacert/" + e.caID},
		{e.r.PolicyARN("p"), "arn:aws:iot:eu-west-1:111122223333:policy/p"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("ARN %q, want %q", tt.got, tt.want)
		}
	}
	if c.CACertificateID != e.caID {
		t.Errorf("CACertificateID %q, want %q", c.CACertificateID, e.caID)
	}
}

func TestPrincipalARNChecks(t *testing.T) {
	e := newEnv(t, true)
	ctx := context.Background()
	c, err := e.r.RegisterCertificate(ctx, e.devicePEM(t, "d1"), fleet.CertActive)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.r.CreateThing(ctx, "d1", nil); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		arn  string
		want error
	}{
		{"not an ARN", "d1", fleet.ErrInvalid},
		{"thing ARN", "arn:aws:iot:eu-west-1:111122223333:thing/d1", fleet.ErrInvalid},
		{"other region", strings.Replace(c.ARN, "eu-west-1", "us-west-2", 1), fleet.ErrNotFound},
		{"other account", strings.Replace(c.ARN, "111122223333", "999999999999", 1), fleet.ErrNotFound},
		{"registered", c.ARN, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := e.r.AttachThingPrincipal(ctx, "d1", tt.arn); !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("AttachThingPrincipal(%s) = %v, want %v", tt.arn, err, tt.want)
			}
		})
	}
}

func TestCACertificates(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, true)
	t.Run("same certificate twice is ErrAlreadyExists", func(t *testing.T) {
		if _, err := e.r.RegisterCACertificate(ctx, e.ca.CertPEM(), false); !errors.Is(err, fleet.ErrAlreadyExists) {
			t.Fatalf("err = %v, want ErrAlreadyExists", err)
		}
	})
	t.Run("a leaf is not a CA", func(t *testing.T) {
		if _, err := e.r.RegisterCACertificate(ctx, e.devicePEM(t, "leaf"), false); !errors.Is(err, fleet.ErrInvalid) {
			t.Fatalf("err = %v, want ErrInvalid", err)
		}
	})
	t.Run("SNI_ONLY: another CA with the same subject is allowed", func(t *testing.T) {
		root2, err := pki.NewRoot("root", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		twin, err := root2.NewIntermediate("intermediate", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		ca2, err := e.r.RegisterCACertificate(ctx, twin.CertPEM(), false)
		if err != nil {
			t.Fatalf("register twin CA: %v", err)
		}
		leaf, err := twin.IssueDevice("twin-dev", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		c, err := e.r.RegisterCertificate(ctx, leaf.CertPEM(), fleet.CertActive)
		if err != nil {
			t.Fatal(err)
		}
		if c.CACertificateID != ca2.ID {
			t.Errorf("issuer %s, want the twin %s (found by signature, not by subject)", c.CACertificateID, ca2.ID)
		}
		if n := len(e.r.CACertificateList()); n != 2 {
			t.Errorf("%d CAs listed, want 2", n)
		}
	})
	t.Run("an INACTIVE CA refuses registrations", func(t *testing.T) {
		if err := e.r.SetCAStatus(ctx, e.caID, fleet.CertInactive); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := e.r.SetCAStatus(ctx, e.caID, fleet.CertActive); err != nil {
				t.Fatal(err)
			}
		}()
		if _, err := e.r.RegisterCertificate(ctx, e.devicePEM(t, "x"), fleet.CertActive); !errors.Is(err, fleet.ErrInvalid) {
			t.Fatalf("RegisterCertificate = %v, want ErrInvalid", err)
		}
		if _, _, err := e.r.AutoRegister(ctx, e.devicePEM(t, "y")); !errors.Is(err, fleet.ErrInvalid) {
			t.Fatalf("AutoRegister = %v, want ErrInvalid", err)
		}
		ca, err := e.r.DescribeCACertificate(ctx, e.caID)
		if err != nil || ca.Status != fleet.CertInactive {
			t.Fatalf("DescribeCACertificate = %+v, %v; want INACTIVE", ca, err)
		}
	})
	t.Run("SetCAStatus errors", func(t *testing.T) {
		if err := e.r.SetCAStatus(ctx, e.caID, fleet.CertRevoked); !errors.Is(err, fleet.ErrInvalid) {
			t.Errorf("REVOKED: %v, want ErrInvalid", err)
		}
		if err := e.r.SetCAStatus(ctx, strings.Repeat("0", 64), fleet.CertInactive); !errors.Is(err, fleet.ErrNotFound) {
			t.Errorf("unknown: %v, want ErrNotFound", err)
		}
	})
}

func TestRegisterCertificateValidity(t *testing.T) {
	e := newEnv(t, true)
	expired, err := e.ca.Issue(pki.Options{CommonName: "old", NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.r.RegisterCertificate(context.Background(), expired.CertPEM(), fleet.CertActive); !errors.Is(err, fleet.ErrInvalid) {
		t.Fatalf("expired certificate: %v, want ErrInvalid", err)
	}
}

// TestAutoRegister runs in a synctest bubble, whose clock the test moves on
// exactly (memiot reads time.Now).
func TestAutoRegister(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		e := newEnv(t, true)
		pem := e.devicePEM(t, "jitr-1")
		c, created, err := e.r.AutoRegister(ctx, pem)
		if err != nil || !created {
			t.Fatalf("AutoRegister = %v, %v; want created", created, err)
		}
		if c.Status != fleet.CertPendingActivation || c.CACertificateID != e.caID {
			t.Errorf("auto-registered %+v, want PENDING_ACTIVATION from %s", c, e.caID)
		}
		again, created, err := e.r.AutoRegister(ctx, pem)
		if err != nil || created || again != c {
			t.Errorf("second AutoRegister = %+v, %v, %v; want the same certificate, not created", again, created, err)
		}
		if got, ok := e.r.CertificateByID(c.ID); !ok || got != c {
			t.Errorf("CertificateByID = %+v, %v", got, ok)
		}
		first, ok := e.r.CertificateRegisteredAt(c.ID)
		if !ok || first.IsZero() {
			t.Fatalf("CertificateRegisteredAt = %v, %v", first, ok)
		}
		// Deleted and registered again: a new registration, a new timestamp.
		if err := e.r.UpdateCertificate(ctx, c.ID, fleet.CertInactive); err != nil {
			t.Fatal(err)
		}
		if err := e.r.DeleteCertificate(ctx, c.ID); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second) // the bubble's clock: exactly one second later
		if _, created, err := e.r.AutoRegister(ctx, pem); err != nil || !created {
			t.Fatalf("AutoRegister after delete = %v, %v", created, err)
		}
		if again, _ := e.r.CertificateRegisteredAt(c.ID); !again.Equal(first.Add(time.Second)) {
			t.Errorf("registered again at %v, first at %v: want a second later", again, first)
		}
		if _, ok := e.r.CertificateRegisteredAt("nope"); ok {
			t.Error("CertificateRegisteredAt of an unknown certificate")
		}
		if _, _, err := e.r.AutoRegister(ctx, "junk"); !errors.Is(err, fleet.ErrInvalid) {
			t.Errorf("junk PEM: %v, want ErrInvalid", err)
		}

		noAuto := newEnv(t, false)
		if _, _, err := noAuto.r.AutoRegister(ctx, noAuto.devicePEM(t, "d")); !errors.Is(err, fleet.ErrInvalid) {
			t.Errorf("CA without auto-registration: %v, want ErrInvalid", err)
		}
		if n := len(noAuto.r.CertificateList()); n != 0 {
			t.Errorf("%d certificates after refused auto-registration, want 0", n)
		}
	})
}

func TestUpdateCertificateRules(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, true)
	tests := []struct {
		from, to fleet.CertStatus
		want     error
	}{
		{fleet.CertActive, fleet.CertPendingActivation, fleet.ErrInvalid},
		{fleet.CertActive, fleet.CertPendingTransfer, fleet.ErrInvalid},
		{fleet.CertRevoked, fleet.CertInactive, fleet.ErrInvalid},
		{fleet.CertActive, "BOGUS", fleet.ErrInvalid},
		{fleet.CertPendingActivation, fleet.CertRevoked, nil},
	}
	for i, tt := range tests {
		t.Run(fmt.Sprintf("%s to %s", tt.from, tt.to), func(t *testing.T) {
			c, err := e.r.RegisterCertificate(ctx, e.devicePEM(t, fmt.Sprint("u", i)), tt.from)
			if err != nil {
				t.Fatal(err)
			}
			err = e.r.UpdateCertificate(ctx, c.ID, tt.to)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("UpdateCertificate = %v, want %v", err, tt.want)
			}
			got, _ := e.r.CertificateByID(c.ID)
			if want := map[bool]fleet.CertStatus{true: tt.from, false: tt.to}[err != nil]; got.Status != want {
				t.Errorf("status %s, want %s", got.Status, want)
			}
		})
	}
	if err := e.r.UpdateCertificate(ctx, "not-an-id", fleet.CertActive); !errors.Is(err, fleet.ErrInvalid) {
		t.Errorf("malformed id: %v, want ErrInvalid", err)
	}
}

func TestThingAttributeRemoval(t *testing.T) {
	ctx := context.Background()
	r := New("eu-west-1", "1")
	if _, err := r.CreateThing(ctx, "t", map[string]string{"a": "1", "b": "2"}); err != nil {
		t.Fatal(err)
	}
	if err := r.UpdateThingAttributes(ctx, "t", map[string]string{"a": ""}); err != nil {
		t.Fatal(err)
	}
	th, err := r.DescribeThing(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	if len(th.Attributes) != 1 || th.Attributes["b"] != "2" {
		t.Errorf("attributes %v, want only b=2", th.Attributes)
	}
	th.Attributes["b"] = "mutated"
	if again, _ := r.DescribeThing(ctx, "t"); again.Attributes["b"] != "2" {
		t.Errorf("a caller's change to returned attributes leaked into the registry")
	}
}

func TestPolicies(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, true)
	doc := `{"Version":"2012-10-17","Statement":[]}`
	if err := e.r.CreatePolicy(ctx, "p1", doc); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, policy, doc string
		want              error
	}{
		{"duplicate", "p1", doc, fleet.ErrAlreadyExists},
		{"not JSON", "p2", "{", fleet.ErrInvalid},
		{"bad name", "p 3", doc, fleet.ErrInvalid},
	}
	for _, tt := range tests {
		if err := e.r.CreatePolicy(ctx, tt.policy, tt.doc); !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
	if got, err := e.r.GetPolicy(ctx, "p1"); err != nil || got != doc {
		t.Errorf("GetPolicy = %q, %v", got, err)
	}
	if _, err := e.r.GetPolicy(ctx, "nope"); !errors.Is(err, fleet.ErrNotFound) {
		t.Errorf("GetPolicy unknown: %v", err)
	}
	c, err := e.r.RegisterCertificate(ctx, e.devicePEM(t, "d"), fleet.CertActive)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.r.AttachPolicy(ctx, "p1", c.ARN); err != nil {
		t.Fatal(err)
	}
	if docs := e.r.PoliciesForPrincipal(c.ARN); len(docs) != 1 || docs[0] != doc {
		t.Errorf("PoliciesForPrincipal = %v", docs)
	}
	if _, err := e.r.CreateThing(ctx, "d", nil); err != nil {
		t.Fatal(err)
	}
	if err := e.r.AttachThingPrincipal(ctx, "d", c.ARN); err != nil {
		t.Fatal(err)
	}
	if things := e.r.ThingsForPrincipal(c.ARN); len(things) != 1 || things[0] != "d" {
		t.Errorf("ThingsForPrincipal = %v", things)
	}
}

// TestHookRefusesWithoutChange injects each kind of error before each
// operation and checks that the registry is exactly as before.
func TestHookRefusesWithoutChange(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, true)
	if err := e.r.CreatePolicy(ctx, "pol", `{}`); err != nil {
		t.Fatal(err)
	}
	pending, err := e.r.RegisterCertificate(ctx, e.devicePEM(t, "dev"), fleet.CertInactive)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.r.CreateThing(ctx, "dev", nil); err != nil {
		t.Fatal(err)
	}
	newPEM := e.devicePEM(t, "other")
	calls := map[string]func() error{
		"RegisterCertificate": func() error { _, err := e.r.RegisterCertificate(ctx, newPEM, fleet.CertActive); return err },
		"UpdateCertificate":   func() error { return e.r.UpdateCertificate(ctx, pending.ID, fleet.CertActive) },
		"DeleteCertificate":   func() error { return e.r.DeleteCertificate(ctx, pending.ID) },
		"CreateThing":         func() error { _, err := e.r.CreateThing(ctx, "new", nil); return err },
		"UpdateThing": func() error {
			return e.r.UpdateThingAttributes(ctx, "dev", map[string]string{"a": "b"})
		},
		"DeleteThing":           func() error { return e.r.DeleteThing(ctx, "dev") },
		"AttachThingPrincipal":  func() error { return e.r.AttachThingPrincipal(ctx, "dev", pending.ARN) },
		"DetachThingPrincipal":  func() error { return e.r.DetachThingPrincipal(ctx, "dev", pending.ARN) },
		"AttachPolicy":          func() error { return e.r.AttachPolicy(ctx, "pol", pending.ARN) },
		"DetachPolicy":          func() error { return e.r.DetachPolicy(ctx, "pol", pending.ARN) },
		"DescribeCertificate":   func() error { _, err := e.r.DescribeCertificate(ctx, pending.ID); return err },
		"DescribeCACertificate": func() error { _, err := e.r.DescribeCACertificate(ctx, e.caID); return err },
		"DescribeThing":         func() error { _, err := e.r.DescribeThing(ctx, "dev"); return err },
		"ListThingPrincipals":   func() error { _, err := e.r.ListThingPrincipals(ctx, "dev"); return err },
		"ListAttachedPolicies":  func() error { _, err := e.r.ListAttachedPolicies(ctx, pending.ARN); return err },
		"ListThings":            func() error { _, _, err := e.r.ListThings(ctx, "", "", 10, ""); return err },
		"ListCACertificates":    func() error { _, err := e.r.ListCACertificates(ctx); return err },
		"ListCertificatesByCA": func() error {
			_, _, err := e.r.ListCertificatesByCA(ctx, e.caID, 10, "")
			return err
		},
	}
	for _, inject := range []struct {
		make     func(op string) error
		sentinel error
	}{{Throttled, fleet.ErrThrottled}, {Unavailable, fleet.ErrUnavailable}, {Invalid, fleet.ErrInvalid}} {
		for op, call := range calls {
			t.Run(fmt.Sprintf("%s/%v", op, inject.sentinel), func(t *testing.T) {
				var seen []string
				e.r.SetHook(func(_ context.Context, got string) error {
					seen = append(seen, got)
					if got == op {
						return inject.make(op)
					}
					return nil
				})
				afterCalled := false
				e.r.SetAfter(func(context.Context, string) { afterCalled = true })
				defer e.r.SetHook(nil)
				defer e.r.SetAfter(nil)
				before := e.r.Snapshot()
				err := call()
				if !errors.Is(err, inject.sentinel) {
					t.Fatalf("err = %v, want %v", err, inject.sentinel)
				}
				if len(seen) != 1 || seen[0] != op {
					t.Errorf("hook saw %v, want [%s]", seen, op)
				}
				if afterCalled {
					t.Errorf("after hook called for a failed call")
				}
				if !e.r.Snapshot().Equal(before) {
					t.Errorf("state changed by a refused call")
				}
			})
		}
	}
}

func TestAfterHookCrash(t *testing.T) {
	ctx := context.Background()
	var ops []string
	r := New("eu-west-1", "1", WithAfter(func(_ context.Context, op string) {
		ops = append(ops, op)
		if op == "CreateThing" {
			runtime.Goexit() // the process "dies" right after the call succeeded
		}
	}))
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := r.DescribeThing(ctx, "x"); !errors.Is(err, fleet.ErrNotFound) {
			t.Errorf("DescribeThing = %v", err)
		}
		if _, err := r.CreateThing(ctx, "x", nil); err != nil {
			t.Errorf("CreateThing = %v", err)
		}
		t.Errorf("the goroutine went on after the crash")
	}()
	<-done
	if len(ops) != 1 || ops[0] != "CreateThing" {
		t.Errorf("after hook saw %v, want [CreateThing] (not failed calls)", ops)
	}
	if _, err := r.DescribeThing(ctx, "x"); err != nil {
		t.Errorf("the call before the crash did not stick: %v", err)
	}
}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func TestQuotas(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{now: time.Now()}
	r := New("eu-west-1", "1", WithQuotas(AWSDefaultQuotas), WithClock(clock.Now))
	if _, err := r.CreateThing(ctx, "t", nil); err != nil {
		t.Fatal(err)
	}
	burst := func(n int) (ok, throttled int) {
		for range n {
			_, err := r.ListThingPrincipals(ctx, "t")
			switch {
			case err == nil:
				ok++
			case errors.Is(err, fleet.ErrThrottled) && strings.Contains(err.Error(), "Rate exceeded"):
				throttled++
			default:
				t.Fatalf("ListThingPrincipals: %v", err)
			}
		}
		return ok, throttled
	}
	if ok, thr := burst(25); ok != 20 || thr != 5 {
		t.Errorf("burst of 25 at 20 TPS: %d ok, %d throttled; want 20, 5", ok, thr)
	}
	clock.Add(500 * time.Millisecond)
	if ok, thr := burst(11); ok != 10 || thr != 1 {
		t.Errorf("half a second later: %d ok, %d throttled; want 10, 1", ok, thr)
	}
	clock.Add(time.Second)
	if ok, thr := burst(20); ok != 20 || thr != 0 {
		t.Errorf("a second later: %d ok, %d throttled; want 20, 0", ok, thr)
	}
	// Other operations have their own buckets; unlisted ones are unlimited.
	if _, err := r.DescribeThing(ctx, "t"); err != nil {
		t.Errorf("DescribeThing: %v", err)
	}
	if got := r.Throttled(); !maps.Equal(got, map[string]int{"ListThingPrincipals": 6}) {
		t.Errorf("Throttled() = %v, want ListThingPrincipals 6", got)
	}
	r.SetQuotas(nil)
	if ok, thr := burst(100); ok != 100 || thr != 0 {
		t.Errorf("without quotas: %d ok, %d throttled", ok, thr)
	}
	want := map[string]float64{"CreateThing": 100, "DescribeThing": 350, "ListThingPrincipals": 20, "AttachPolicy": 15, "RegisterCertificate": 10}
	for op, tps := range want {
		if AWSDefaultQuotas[op] != tps {
			t.Errorf("AWSDefaultQuotas[%s] = %v, want %v", op, AWSDefaultQuotas[op], tps)
		}
	}
	for _, op := range []string{"ListThings", "ListCACertificates", "ListCertificatesByCA"} {
		if AWSDefaultQuotas[op] != 10 {
			t.Errorf("AWSDefaultQuotas[%s] = %v, want 10", op, AWSDefaultQuotas[op])
		}
	}
	if len(AWSDefaultQuotas) != 18 {
		t.Errorf("%d default quotas, want 18", len(AWSDefaultQuotas))
	}
}

func TestLatency(t *testing.T) {
	r := New("eu-west-1", "1", WithLatency(20*time.Millisecond))
	start := time.Now()
	if err := r.DeleteThing(context.Background(), "t"); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 20*time.Millisecond {
		t.Errorf("call took %v, want at least 20ms", d)
	}
	r.SetLatency(time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := r.CreateThing(ctx, "t", nil); !errors.Is(err, fleet.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("CreateThing past its deadline: %v", err)
	}
	if len(r.ThingList()) != 0 {
		t.Errorf("a call that timed out changed the registry")
	}
}

func TestSnapshotIsDeep(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, true)
	if _, err := e.r.CreateThing(ctx, "t", map[string]string{"a": "1"}); err != nil {
		t.Fatal(err)
	}
	s := e.r.Snapshot()
	s.Things["t"].Attributes["a"] = "changed"
	delete(s.CACertificates, e.caID)
	if again := e.r.Snapshot(); again.Equal(s) || again.Things["t"].Attributes["a"] != "1" {
		t.Errorf("changing a snapshot changed the registry")
	}
	if !e.r.Snapshot().Equal(e.r.Snapshot()) {
		t.Errorf("two snapshots of the same state differ")
	}
}

// TestConcurrentOnboarding runs many onboardings at once (run with -race):
// every one must end complete and consistent.
func TestConcurrentOnboarding(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, true)
	if err := e.r.CreatePolicy(ctx, "pol", `{}`); err != nil {
		t.Fatal(err)
	}
	const n = 40
	pems := make([]string, n)
	for i := range pems {
		pems[i] = e.devicePEM(t, fmt.Sprint("dev-", i))
	}
	var wg sync.WaitGroup
	for i := range n {
		for range 2 { // two racers per device
			wg.Go(func() {
				name := fmt.Sprint("dev-", i)
				c, _, err := e.r.AutoRegister(ctx, pems[i])
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := e.r.CreateThing(ctx, name, map[string]string{"cert": c.ID}); err != nil {
					t.Error(err)
				}
				for _, err := range []error{
					e.r.AttachThingPrincipal(ctx, name, c.ARN),
					e.r.AttachPolicy(ctx, "pol", c.ARN),
					e.r.UpdateCertificate(ctx, c.ID, fleet.CertActive),
				} {
					if err != nil {
						t.Error(err)
					}
				}
				_ = e.r.Snapshot()
			})
		}
	}
	wg.Wait()
	s := e.r.Snapshot()
	if len(s.Things) != n || len(s.Certificates) != n || len(s.ThingPrincipals) != n || len(s.PrincipalPolicies) != n {
		t.Fatalf("state: %d things, %d certificates, %d with principals, %d with policies; want %d each",
			len(s.Things), len(s.Certificates), len(s.ThingPrincipals), len(s.PrincipalPolicies), n)
	}
	for _, c := range s.Certificates {
		if c.Status != fleet.CertActive {
			t.Errorf("certificate %s is %s", c.ID, c.Status)
		}
	}
}

// TestCreatedAt: one registration has one creationDate, whichever way it is
// read.
func TestCreatedAt(t *testing.T) {
	ctx := context.Background()
	t0 := time.Now().Round(0) // within the certificates' validity
	clock := &fakeClock{now: t0}
	e := newEnv(t, true, WithClock(clock.Now))
	c, err := e.r.RegisterCertificate(ctx, e.devicePEM(t, "d"), fleet.CertActive)
	if err != nil {
		t.Fatal(err)
	}
	clock.Add(time.Minute)
	if !c.CreatedAt.Equal(t0) {
		t.Errorf("RegisterCertificate CreatedAt %v, want %v", c.CreatedAt, t0)
	}
	d, err := e.r.DescribeCertificate(ctx, c.ID)
	if err != nil || d != c {
		t.Errorf("DescribeCertificate = %+v, %v; want %+v", d, err, c)
	}
	if at, _ := e.r.CertificateRegisteredAt(c.ID); !at.Equal(t0) {
		t.Errorf("CertificateRegisteredAt %v, want %v", at, t0)
	}
	listed, _, err := e.r.ListCertificatesByCA(ctx, e.caID, 10, "")
	if err != nil || len(listed) != 1 || !listed[0].CreatedAt.Equal(t0) || listed[0].PEM != "" {
		t.Errorf("ListCertificatesByCA = %+v, %v; want it created at %v, no PEM", listed, err, t0)
	}
	// A status change keeps the registration's date.
	if err := e.r.UpdateCertificate(ctx, c.ID, fleet.CertInactive); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.r.CertificateByID(c.ID); !got.CreatedAt.Equal(t0) {
		t.Errorf("CreatedAt after UpdateCertificate %v, want %v", got.CreatedAt, t0)
	}
	// Snapshots leave it out: worlds that register at different times
	// reach the same state.
	if at := e.r.Snapshot().Certificates[c.ID].CreatedAt; !at.IsZero() {
		t.Errorf("snapshot CreatedAt %v, want it left out", at)
	}
}

// TestListThingsCursor: the cursor is the last name returned, so a page goes
// on after it even when that thing is deleted in between, and things created
// before the cursor are not listed again.
func TestListThingsCursor(t *testing.T) {
	ctx := context.Background()
	r := New("eu-west-1", "1")
	for _, n := range []string{"b", "d", "f", "h"} {
		if _, err := r.CreateThing(ctx, n, map[string]string{"k": "v"}); err != nil {
			t.Fatal(err)
		}
	}
	page, next, err := r.ListThings(ctx, "k", "v", 2, "")
	if err != nil || len(page) != 2 || page[0].Name != "b" || page[1].Name != "d" || next == "" {
		t.Fatalf("first page = %+v, %q, %v", page, next, err)
	}
	if err := r.DeleteThing(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.CreateThing(ctx, "a", map[string]string{"k": "v"}); err != nil {
		t.Fatal(err)
	}
	page, next, err = r.ListThings(ctx, "k", "v", 2, next)
	if err != nil || len(page) != 2 || page[0].Name != "f" || page[1].Name != "h" || next != "" {
		t.Fatalf("second page = %+v, %q, %v; want f, h and the end", page, next, err)
	}
	// The returned attributes are the caller's own.
	page[0].Attributes["k"] = "changed"
	if th, _ := r.DescribeThing(ctx, "f"); th.Attributes["k"] != "v" {
		t.Error("a caller's change to listed attributes leaked into the registry")
	}
}

// TestListCertificatesByCAKeepsCAsApart: SNI_ONLY twins (same subject) each
// list only the certificates they signed.
func TestListCertificatesByCAKeepsCAsApart(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, true)
	root2, err := pki.NewRoot("root", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	twin, err := root2.NewIntermediate("intermediate", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	twinCA, err := e.r.RegisterCACertificate(ctx, twin.CertPEM(), false)
	if err != nil {
		t.Fatal(err)
	}
	mine, err := e.r.RegisterCertificate(ctx, e.devicePEM(t, "mine"), fleet.CertActive)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := twin.IssueDevice("twin-dev", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := e.r.RegisterCertificate(ctx, leaf.CertPEM(), fleet.CertActive)
	if err != nil {
		t.Fatal(err)
	}
	for ca, want := range map[string]string{e.caID: mine.ID, twinCA.ID: theirs.ID} {
		got, next, err := e.r.ListCertificatesByCA(ctx, ca, 10, "")
		if err != nil || len(got) != 1 || got[0].ID != want || got[0].CACertificateID != ca || next != "" {
			t.Errorf("ListCertificatesByCA(%s) = %+v, %q, %v; want only %s", ca[:8], got, next, err, want[:8])
		}
	}
	cas, err := e.r.ListCACertificates(ctx)
	if err != nil || len(cas) != 2 {
		t.Fatalf("ListCACertificates = %+v, %v; want both CAs", cas, err)
	}
	for _, ca := range cas {
		if ca.PEM != "" || ca.AutoRegistration {
			t.Errorf("listed %+v: AWS lists neither PEM nor auto-registration", ca)
		}
	}
	if _, _, err := e.r.ListCertificatesByCA(ctx, "not-an-id", 10, ""); !errors.Is(err, fleet.ErrInvalid) {
		t.Errorf("malformed CA id: %v, want ErrInvalid", err)
	}
}
