package pki

import (
	"crypto/tls"
	"testing"
)

// TestRenewDevice: a renewal issues a new key and certificate for the same
// CN, with a NotBefore strictly later than the previous one's even when
// both are issued in the same second, and keeps the previous pair.
func TestRenewDevice(t *testing.T) {
	s := Store{Dir: t.TempDir()}
	if _, err := s.Init(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.RenewDevice("dev-1"); err == nil {
		t.Fatal("renewed a device that has no certificate")
	}
	certFile, keyFile, err := s.Device("dev-1")
	if err != nil {
		t.Fatal(err)
	}
	prev, _ := LoadCertificates(certFile)
	for i := range 3 {
		cf, kf, err := s.RenewDevice("dev-1")
		if err != nil {
			t.Fatal(err)
		}
		if cf != certFile || kf != keyFile {
			t.Errorf("renewal %d wrote %s %s, want %s %s", i, cf, kf, certFile, keyFile)
		}
		cur, _ := LoadCertificates(certFile)
		if cur[0].Subject.CommonName != "dev-1" || !cur[0].NotBefore.After(prev[0].NotBefore) {
			t.Errorf("renewal %d: CN %q NotBefore %v, previous %v", i, cur[0].Subject.CommonName, cur[0].NotBefore, prev[0].NotBefore)
		}
		if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
			t.Errorf("renewal %d: key pair: %v", i, err)
		}
		kept, err := LoadCertificates(s.Path("devices/dev-1" + PreviousSuffix + ".crt"))
		if err != nil || !kept[0].Equal(prev[0]) {
			t.Errorf("renewal %d: previous certificate not kept: %v", i, err)
		}
		if _, err := tls.LoadX509KeyPair(s.Path("devices/dev-1"+PreviousSuffix+".crt"), s.Path("devices/dev-1"+PreviousSuffix+".key")); err != nil {
			t.Errorf("renewal %d: previous key pair: %v", i, err)
		}
		prev = cur
	}
}
