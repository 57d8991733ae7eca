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

var updateRotation = flag.Bool("update-rotation", false, "write the rotation scenario's PKI fixture testdata/rotation.pem")

// TestRotationFixtures checks the rotation scenario's fixed PKI (and writes
// it with -update-rotation): a second auto-registration CA, then for each
// device dst-NNN a renewed certificate (issued after the device's own) and
// an older one (issued before it), both signed by that CA.
func TestRotationFixtures(t *testing.T) {
	if *updateRotation {
		from, to := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2035, 1, 1, 0, 0, 0, 0, time.UTC)
		root, err := pki.NewRootWith(pki.Options{CommonName: "mriot simulation rotation root", NotBefore: from, NotAfter: to, IsCA: true, MaxPathLen: 1})
		if err != nil {
			t.Fatal(err)
		}
		ca, err := root.Issue(pki.Options{CommonName: "mriot simulation renewals", NotBefore: from, NotAfter: to, IsCA: true})
		if err != nil {
			t.Fatal(err)
		}
		inter := &pki.Authority{Cert: ca.Cert, Key: ca.Key}
		var b strings.Builder
		b.WriteString(inter.CertPEM())
		for i := range fixtureDevices {
			for _, nb := range []time.Time{renewedNotBefore, olderNotBefore} {
				leaf, err := inter.Issue(pki.Options{CommonName: fmt.Sprintf("dst-%03d", i), NotBefore: nb, NotAfter: to,
					ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
				if err != nil {
					t.Fatal(err)
				}
				b.WriteString(leaf.CertPEM())
			}
		}
		if err := os.WriteFile("testdata/rotation.pem", []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Skip("fixture written; run again without -update-rotation")
	}
	ca, renewed, older, err := rotationPKI()
	if err != nil {
		t.Fatal(err)
	}
	caX, _ := fleet.ParseCertificatePEM(ca)
	devX, _ := fleet.ParseCertificatePEM(strings.SplitAfter(devicesPEM, "-----END CERTIFICATE-----\n")[0])
	if len(renewed) != fixtureDevices || len(older) != fixtureDevices {
		t.Fatalf("%d renewed and %d older certificates, want %d each", len(renewed), len(older), fixtureDevices)
	}
	for i := range fixtureDevices {
		for _, p := range []string{renewed[i], older[i]} {
			x, _ := fleet.ParseCertificatePEM(p)
			if name, err := fleet.ValidateDeviceCertificate(x, caX, Epoch); err != nil || name != fmt.Sprintf("dst-%03d", i) {
				t.Errorf("device %d: %q %v", i, name, err)
			}
		}
		r, _ := fleet.ParseCertificatePEM(renewed[i])
		o, _ := fleet.ParseCertificatePEM(older[i])
		if !r.NotBefore.After(devX.NotBefore) || !o.NotBefore.Before(devX.NotBefore) {
			t.Errorf("device %d: renewed %v, older %v, own %v", i, r.NotBefore, o.NotBefore, devX.NotBefore)
		}
	}
}
