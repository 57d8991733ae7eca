package local_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/emulator/local"
	"github.com/mriot/mriot/internal/emulator/pki"
	"github.com/mriot/mriot/internal/testkit/tier"
)

// pahoPublish connects to addr with the certificate pair, publishes one
// QoS 1 message on the device's topic and waits for its PUBACK: an error
// when the endpoint refuses the connection or the publish.
func pahoPublish(st *local.Stack, addr, name, certFile, keyFile string) error {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(st.RootCAPEM())
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("ssl://" + addr).SetClientID(name).
		SetTLSConfig(&tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}, ServerName: pki.ServerName, MinVersion: tls.VersionTLS12}).
		SetAutoReconnect(false).SetConnectRetry(false).SetProtocolVersion(4).SetConnectTimeout(5 * time.Second))
	tok := c.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return fmt.Errorf("connect to %s: %v", addr, tok.Error())
	}
	defer c.Disconnect(100)
	p := c.Publish("i/"+name+"/m", 1, false, `{"message": "rotation"}`)
	if !p.WaitTimeout(10*time.Second) || p.Error() != nil {
		return fmt.Errorf("publish to %s: %v", addr, p.Error())
	}
	return nil
}

// everywhere runs check on the global endpoint and every regional one.
func everywhere(st *local.Stack, check func(addr string) error) error {
	addrs := []string{st.GlobalAddr()}
	for _, r := range st.Regions() {
		addrs = append(addrs, r.Broker.Addr())
	}
	for _, a := range addrs {
		if err := check(a); err != nil {
			return err
		}
	}
	return nil
}

// TestCertificateRotation: a device onboarded with certificate A renews it
// (mriot pki device --renew) and connects with B: after B's first JITR
// round B works in every region; A keeps working everywhere until the
// grace ends and is refused everywhere after; a certificate issued before
// B is refused and revoked.
func TestCertificateRotation(t *testing.T) {
	const grace = 10 * time.Second
	regions := []string{"eu-west-1", "us-west-2"}
	// Every 12 s: a scheduled reconcile invocation keeps 10 s of its time
	// (reconcile.DefaultStopMargin) to save its position, so a shorter
	// interval leaves it none.
	const every = 12 * time.Second
	st := startStack(t, local.Config{Regions: regions, RotationGrace: grace, ReconcileInterval: every})
	ctx := context.Background()
	const name = "rot_001"
	certA, keyA, err := st.PKI().Device(name)
	if err != nil {
		t.Fatal(err)
	}
	// A: refused at the first connection (JITR), then live everywhere.
	if err := pahoPublish(st, st.GlobalAddr(), name, certA, keyA); err == nil {
		t.Fatal("the first connection with A was accepted")
	}
	waitLive(t, st, name)
	tier.Eventually(t, 20*time.Second, "A works everywhere", func() error {
		return everywhere(st, func(addr string) error { return pahoPublish(st, addr, name, certA, keyA) })
	})

	// B: the renewed certificate. Its first connection fires JITR, which
	// rotates the device; then B works in every region at once.
	certB, keyB, err := st.PKI().RenewDevice(name)
	if err != nil {
		t.Fatal(err)
	}
	certA, keyA = st.PKI().Path("devices/"+name+pki.PreviousSuffix+".crt"), st.PKI().Path("devices/"+name+pki.PreviousSuffix+".key")
	if err := pahoPublish(st, st.GlobalAddr(), name, certB, keyB); err == nil {
		t.Fatal("the first connection with B was accepted before JITR")
	}
	var rotatedAt time.Time
	tier.Eventually(t, 20*time.Second, "B works everywhere", func() error {
		err := everywhere(st, func(addr string) error { return pahoPublish(st, addr, name, certB, keyB) })
		if err == nil {
			rotatedAt = time.Now()
		}
		return err
	})
	var rec struct {
		CertificateID string `json:"certificateId"`
		Retiring      []struct {
			CertificateID string    `json:"certificateId"`
			RetireAt      time.Time `json:"retireAt"`
		} `json:"retiring"`
	}
	if code := apiGet(t, st, "/devices/"+name, &rec); code != http.StatusOK || len(rec.Retiring) != 1 {
		t.Fatalf("device record: HTTP %d %+v, want one retiring certificate", code, rec)
	}
	xb, _ := pki.LoadCertificates(certB)
	xa, _ := pki.LoadCertificates(certA)
	if rec.CertificateID != fleet.CertificateID(xb[0]) || rec.Retiring[0].CertificateID != fleet.CertificateID(xa[0]) {
		t.Errorf("record names %s retiring %s; want B and A", rec.CertificateID[:8], rec.Retiring[0].CertificateID[:8])
	}
	retireAt := rec.Retiring[0].RetireAt
	// A still works in every region during the grace.
	if time.Until(retireAt) > 2*time.Second {
		if err := everywhere(st, func(addr string) error { return pahoPublish(st, addr, name, certA, keyA) }); err != nil && time.Until(retireAt) > 0 {
			t.Errorf("A refused during its grace (%s left): %v", time.Until(retireAt), err)
		}
	} else {
		t.Logf("B took until %s to work everywhere; the grace ends at %s: A's grace not checked", rotatedAt, retireAt)
	}

	// An older certificate than B: refused, and revoked.
	inter, err := st.PKI().Intermediate()
	if err != nil {
		t.Fatal(err)
	}
	old, err := inter.Issue(pki.Options{CommonName: name, NotBefore: xb[0].NotBefore.Add(-time.Second), Validity: time.Hour,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	oldCert, oldKey := dir+"/old.crt", dir+"/old.key"
	writeLeaf(t, old, oldCert, oldKey)
	oldID := fleet.CertificateID(old.Cert)
	if err := pahoPublish(st, st.Region(regions[0]).Broker.Addr(), name, oldCert, oldKey); err == nil {
		t.Fatal("an older certificate than the current one was accepted")
	}
	tier.Eventually(t, 20*time.Second, "the older certificate revoked", func() error {
		c, ok := st.Region(regions[0]).Registry.CertificateByID(oldID)
		if !ok || c.Status != fleet.CertRevoked {
			return fmt.Errorf("older certificate: %v %s", ok, c.Status)
		}
		return nil
	})
	if err := pahoPublish(st, st.Region(regions[0]).Broker.Addr(), name, oldCert, oldKey); err == nil {
		t.Error("the revoked older certificate was accepted")
	}

	// After the grace, A is refused everywhere (the reconciler's retirement
	// sweep removes it at its next invocation); B keeps working.
	time.Sleep(time.Until(retireAt))
	tier.Eventually(t, 3*every, "A refused everywhere after its grace", func() error {
		for _, r := range st.Regions() {
			if c, ok := r.Registry.CertificateByID(fleet.CertificateID(xa[0])); ok && c.Status == fleet.CertActive {
				return fmt.Errorf("A is ACTIVE in %s", r.Name)
			}
		}
		return everywhere(st, func(addr string) error {
			if err := pahoPublish(st, addr, name, certA, keyA); err == nil {
				return fmt.Errorf("A accepted at %s", addr)
			}
			return nil
		})
	})
	if err := everywhere(st, func(addr string) error { return pahoPublish(st, addr, name, certB, keyB) }); err != nil {
		t.Errorf("B after A's retirement: %v", err)
	}
	// A's connections after its retirement registered it again (IoT's
	// auto-registration): jitr refused it as retired and revoked it; it is
	// never ACTIVE again.
	if err := st.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	for _, r := range st.Regions() {
		if c, ok := r.Registry.CertificateByID(fleet.CertificateID(xa[0])); ok && c.Status != fleet.CertRevoked && c.Status != fleet.CertPendingActivation {
			t.Errorf("A is %s in %s after its retirement", c.Status, r.Name)
		}
	}
}

func writeLeaf(t *testing.T, l *pki.Leaf, certFile, keyFile string) {
	t.Helper()
	key, err := l.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, []byte(l.CertPEM()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, []byte(key), 0o600); err != nil {
		t.Fatal(err)
	}
}
