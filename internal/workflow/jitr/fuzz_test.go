package jitr

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/mriot/mriot/internal/core/fleet"
)

// FuzzParseCertificateRegisteredEvent feeds arbitrary payloads to the parser
// and to the handler's entry point: never a panic; a payload the parser
// refuses wraps ErrInvalid and is dropped without an error (no retry).
func FuzzParseCertificateRegisteredEvent(f *testing.F) {
	fixtures(f)
	if b, err := os.ReadFile("testdata/registered.json"); err == nil {
		f.Add(b)
	}
	f.Add(registeredEvent(fleet.CertificateID(fx.dev.Cert), fleet.CertificateID(fx.ca.Cert)))
	f.Add([]byte(`{"certificateId":"` + fleet.CertificateID(fx.dev.Cert) + `","caCertificateId":"x","certificateRegistrationTimestamp":"1700000000"}`))
	f.Add([]byte(`{"certificateRegistrationTimestamp":12.5}`))
	f.Add([]byte(`null`))
	f.Add([]byte(``))
	f.Add([]byte(`{"certificateId":1}`))
	w, err := newWorld(fx.dev.CertPEM())
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(w.close)
	f.Fuzz(func(t *testing.T, payload []byte) {
		ev, err := fleet.ParseCertificateRegisteredEvent(payload)
		if err != nil && !errors.Is(err, fleet.ErrInvalid) {
			t.Fatalf("parse error does not wrap ErrInvalid: %v", err)
		}
		_, herr := w.h.Invoke(context.Background(), payload)
		if err != nil && herr != nil {
			t.Fatalf("an invalid event was returned for retry: %v", herr)
		}
		if err == nil && (len(ev.CertificateID) != 64 || len(ev.CACertificateID) != 64) {
			t.Fatalf("accepted ids %q %q", ev.CertificateID, ev.CACertificateID)
		}
	})
}

// FuzzParseCertificatePEM feeds arbitrary PEM text to the certificate parser
// and, when it parses, to the device validation: never a panic, refusals
// wrap ErrInvalid.
func FuzzParseCertificatePEM(f *testing.F) {
	fixtures(f)
	f.Add(fx.dev.CertPEM())
	f.Add(fx.ca.CertPEM())
	f.Add(fx.dev.ChainPEM())
	f.Add("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
	f.Add("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n")
	f.Add("")
	f.Fuzz(func(t *testing.T, text string) {
		cert, err := fleet.ParseCertificatePEM(text)
		if err != nil {
			if !errors.Is(err, fleet.ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		name, err := fleet.ValidateDeviceCertificate(cert, fx.ca.Cert, t0)
		if err != nil && !errors.Is(err, fleet.ErrInvalid) {
			t.Fatalf("validation error does not wrap ErrInvalid: %v", err)
		}
		if err == nil && fleet.ValidateThingName(name) != nil {
			t.Fatalf("accepted invalid thing name %q", name)
		}
	})
}
