package pki

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
)

func TestChainVerifies(t *testing.T) {
	root, err := NewRoot("Root CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.NewIntermediate("Intermediate CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := inter.IssueDevice("test_001", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := inter.IssueServer("iot.example.com", []string{"localhost", "127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(root.Cert)
	inters := x509.NewCertPool()
	inters.AddCert(inter.Cert)
	if _, err := dev.Cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("device chain: %v", err)
	}
	for _, host := range []string{"iot.example.com", "localhost", "127.0.0.1"} {
		if _, err := srv.Cert.Verify(x509.VerifyOptions{DNSName: host, Roots: roots, Intermediates: inters}); err != nil {
			t.Errorf("server for %s: %v", host, err)
		}
	}
	if _, err := fleet.ValidateDeviceCertificate(dev.Cert, inter.Cert, time.Now()); err != nil {
		t.Errorf("fleet validation of a pki device: %v", err)
	}
	if got := len(dev.Chain); got != 2 {
		t.Errorf("device chain length %d, want 2 (intermediate, root)", got)
	}
	// An intermediate may not sign another CA (path length 0).
	sub, err := inter.NewIntermediate("Sub CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := sub.IssueDevice("x", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	inters.AddCert(sub.Cert)
	if _, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err == nil {
		t.Error("a CA below the intermediate verified; want a path-length error")
	}
}

func TestPEMRoundTrip(t *testing.T) {
	root, err := NewRoot("Root CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := root.IssueDevice("dev-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := fleet.ParseCertificatePEM(dev.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	if !c.Equal(dev.Cert) {
		t.Error("PEM round trip changed the certificate")
	}
	keyPEM, err := dev.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	k, err := ParsePrivateKeyPEM([]byte(keyPEM))
	if err != nil {
		t.Fatal(err)
	}
	if !k.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(dev.Key.Public()) {
		t.Error("key round trip changed the key")
	}
}

func TestStore(t *testing.T) {
	s := Store{Dir: t.TempDir()}
	inter, err := s.Init()
	if err != nil {
		t.Fatal(err)
	}
	again, err := s.Init()
	if err != nil {
		t.Fatal(err)
	}
	if !again.Cert.Equal(inter.Cert) {
		t.Error("second Init replaced the intermediate CA")
	}
	certFile, keyFile, err := s.Device("test_001")
	if err != nil {
		t.Fatal(err)
	}
	certs, err := LoadCertificates(certFile)
	if err != nil {
		t.Fatal(err)
	}
	if certs[0].Subject.CommonName != "test_001" {
		t.Errorf("device CN %q", certs[0].Subject.CommonName)
	}
	if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
		t.Errorf("device key pair: %v", err)
	}
	srv, err := s.ServerCertificate()
	if err != nil {
		t.Fatal(err)
	}
	if len(srv.Certificate) != 2 {
		t.Errorf("server presents %d certificates, want leaf + intermediate", len(srv.Certificate))
	}
	if _, err := LoadAuthority(s.Path(InterCertFile), s.Path(RootKeyFile)); err == nil {
		t.Error("LoadAuthority accepted a key that does not match the certificate")
	}
}
