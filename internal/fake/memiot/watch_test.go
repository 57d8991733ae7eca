package memiot

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
)

type change struct {
	id     string
	status fleet.CertStatus
}

// TestOnCertificateChange: every change of a certificate's status is told
// (registration, auto-registration, update, deletion), and only a change;
// the registry can be read from the callback, which sees the new state; a
// cancelled watcher is told nothing more.
func TestOnCertificateChange(t *testing.T) {
	e := newEnv(t, true)
	ctx := context.Background()
	var got, other []change
	seen := map[string]fleet.CertStatus{} // what the registry said inside the callback
	cancel := e.r.OnCertificateChange(func(id string, status fleet.CertStatus) {
		got = append(got, change{id, status})
		done := make(chan struct{})
		go func() { // on another goroutine: a lock still held fails the test, not the run
			defer close(done)
			c, ok := e.r.CertificateByID(id)
			if !ok {
				c.Status = CertificateDeleted
			}
			seen[id+string(status)] = c.Status
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Errorf("the registry cannot be read from the callback of %s %s: its lock is held", id, status)
		}
	})
	defer e.r.OnCertificateChange(func(id string, status fleet.CertStatus) { other = append(other, change{id, status}) })()

	c, err := e.r.RegisterCertificate(ctx, e.devicePEM(t, "d1"), fleet.CertActive)
	if err != nil {
		t.Fatal(err)
	}
	auto, created, err := e.r.AutoRegister(ctx, e.devicePEM(t, "d2"))
	if err != nil || !created {
		t.Fatalf("AutoRegister: created %v, %v", created, err)
	}
	steps := []struct {
		name string
		do   func() error
	}{
		{"auto-register a known certificate", func() error { _, _, err := e.r.AutoRegister(ctx, c.PEM); return err }},
		{"update to the same status", func() error { return e.r.UpdateCertificate(ctx, c.ID, fleet.CertActive) }},
		{"deactivate", func() error { return e.r.UpdateCertificate(ctx, c.ID, fleet.CertInactive) }},
		{"revoke", func() error { return e.r.UpdateCertificate(ctx, c.ID, fleet.CertRevoked) }},
		{"reactivate a revoked certificate (refused)", func() error {
			if err := e.r.UpdateCertificate(ctx, c.ID, fleet.CertActive); err == nil {
				t.Error("a REVOKED certificate became ACTIVE")
			}
			return nil
		}},
		{"delete", func() error { return e.r.DeleteCertificate(ctx, c.ID) }},
		{"delete an unknown certificate (refused)", func() error {
			if err := e.r.DeleteCertificate(ctx, c.ID); err == nil {
				t.Error("deleted twice")
			}
			return nil
		}},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
	}
	want := []change{
		{c.ID, fleet.CertActive},
		{auto.ID, fleet.CertPendingActivation},
		{c.ID, fleet.CertInactive},
		{c.ID, fleet.CertRevoked},
		{c.ID, CertificateDeleted},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("told %v, want %v", got, want)
	}
	if !slices.Equal(other, want) {
		t.Fatalf("the second watcher was told %v, want %v", other, want)
	}
	for _, w := range want {
		if s := seen[w.id+string(w.status)]; s != w.status {
			t.Errorf("inside the callback of %s %q the registry said %q", w.id, w.status, s)
		}
	}

	cancel()
	if err := e.r.UpdateCertificate(ctx, auto.ID, fleet.CertActive); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Errorf("a cancelled watcher was told %v", got[len(want):])
	}
	if len(other) != len(want)+1 {
		t.Errorf("the remaining watcher was told %v", other)
	}
}
