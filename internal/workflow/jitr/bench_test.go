package jitr

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkJITR measures one registered-certificate event on the in-memory
// fakes: "onboard" a new device (validation, saga, inventory write),
// "redelivery" the same event again moments after onboarding (dropped by this
// process without a registry call), "stale-event" the same event when this
// process has not onboarded it recently (one DescribeCertificate: ACTIVE).
func BenchmarkJITR(b *testing.B) {
	fixtures(b)
	ctx := context.Background()
	b.Run("onboard", func(b *testing.B) {
		w, err := newWorld("")
		if err != nil {
			b.Fatal(err)
		}
		defer w.close()
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			leaf, err := fx.ca.IssueDevice(fmt.Sprintf("bench-%d", i), 24*time.Hour)
			if err != nil {
				b.Fatal(err)
			}
			c, _, err := w.reg.AutoRegister(ctx, leaf.CertPEM())
			if err != nil {
				b.Fatal(err)
			}
			payload := registeredEvent(c.ID, c.CACertificateID)
			b.StartTimer()
			if _, err := w.h.Invoke(ctx, payload); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("redelivery", func(b *testing.B) {
		w, err := newWorld(fx.dev.CertPEM())
		if err != nil {
			b.Fatal(err)
		}
		defer w.close()
		if err := w.deliver(ctx); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if err := w.deliver(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("stale-event", func(b *testing.B) {
		w, err := newWorld(fx.dev.CertPEM())
		if err != nil {
			b.Fatal(err)
		}
		defer w.close()
		if err := w.deliver(ctx); err != nil {
			b.Fatal(err)
		}
		var now time.Time
		w.h.now = func() time.Time { return now }
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			now = t0.Add(time.Duration(i+1) * (doneTTL + time.Second)) // past the dedup window every time
			if err := w.deliver(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}
