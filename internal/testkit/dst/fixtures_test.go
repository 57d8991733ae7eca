package dst

import (
	"crypto/x509"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/emulator/pki"
)

var update = flag.Bool("update", false, "write the simulation's PKI fixtures in testdata")

// fixtureDevices is how many device certificates testdata holds.
const fixtureDevices = 48

// TestFixtures checks the simulation's fixed PKI (and writes it with
// -update): an intermediate CA and device certificates dst-000… signed by
// it, valid around Epoch.
func TestFixtures(t *testing.T) {
	if *update {
		from, to := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2035, 1, 1, 0, 0, 0, 0, time.UTC)
		root, err := pki.NewRootWith(pki.Options{CommonName: "mriot simulation root", NotBefore: from, NotAfter: to, IsCA: true, MaxPathLen: 1})
		if err != nil {
			t.Fatal(err)
		}
		ca, err := root.Issue(pki.Options{CommonName: "mriot simulation devices", NotBefore: from, NotAfter: to, IsCA: true})
		if err != nil {
			t.Fatal(err)
		}
		inter := &pki.Authority{Cert: ca.Cert, Key: ca.Key}
		var b strings.Builder
		for i := range fixtureDevices {
			leaf, err := inter.Issue(pki.Options{CommonName: fmt.Sprintf("dst-%03d", i), NotBefore: from, NotAfter: to,
				ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
			if err != nil {
				t.Fatal(err)
			}
			b.WriteString(leaf.CertPEM())
		}
		if err := os.WriteFile("testdata/ca.pem", []byte(inter.CertPEM()), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile("testdata/devices.pem", []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Skip("fixtures written; run again without -update")
	}
	ca, err := fleet.ParseCertificatePEM(caPEM)
	if err != nil {
		t.Fatal(err)
	}
	pems := strings.SplitAfter(devicesPEM, "-----END CERTIFICATE-----\n")
	if n := len(pems) - 1; n != fixtureDevices { // the last element is empty
		t.Fatalf("%d device certificates, want %d", n, fixtureDevices)
	}
	for i, p := range pems[:fixtureDevices] {
		x, err := fleet.ParseCertificatePEM(p)
		if err != nil {
			t.Fatal(err)
		}
		name, err := fleet.ValidateDeviceCertificate(x, ca, Epoch)
		if err != nil || name != fmt.Sprintf("dst-%03d", i) {
			t.Errorf("device %d: %q %v", i, name, err)
		}
	}
}
