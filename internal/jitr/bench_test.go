package jitr

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkJITR measures one registered-certificate event on the in-memory
// fakes: "onboard" a new device (validation, saga, inventory write),
// "redelivery" the same event again once onboarded (the re-fire path).
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
}
