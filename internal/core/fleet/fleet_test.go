package fleet_test

import (
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/emulator/pki"
)

func TestValidateThingName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"test_001", true},
		{"a", true},
		{"A-Z:0_9", true},
		{strings.Repeat("x", 128), true},
		{strings.Repeat("x", 129), false},
		{"", false},
		{"has space", false},
		{"slash/name", false},
		{"dollar$", false},
		{"dot.name", false},
		{"ümlaut", false},
		{"#", false},
	}
	for _, tc := range tests {
		err := fleet.ValidateThingName(tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateThingName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && !errors.Is(err, fleet.ErrInvalid) {
			t.Errorf("ValidateThingName(%q) error %v does not wrap ErrInvalid", tc.name, err)
		}
	}
}

func TestValidateDeviceCertificate(t *testing.T) {
	root, err := pki.NewRoot("Root", 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := root.NewIntermediate("Intermediate", 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.NewRoot("Other", 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	issue := func(t *testing.T, a *pki.Authority, o pki.Options) *x509.Certificate {
		t.Helper()
		l, err := a.Issue(o)
		if err != nil {
			t.Fatal(err)
		}
		return l.Cert
	}
	client := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	tests := []struct {
		name   string
		cert   func(t *testing.T) *x509.Certificate
		at     time.Time
		reason string // "" = valid
	}{
		{"valid", func(t *testing.T) *x509.Certificate {
			return issue(t, ca, pki.Options{CommonName: "dev-1", Validity: time.Hour, ExtKeyUsage: client})
		}, now, ""},
		{"no EKU extension is allowed", func(t *testing.T) *x509.Certificate {
			return issue(t, ca, pki.Options{CommonName: "dev-2", Validity: time.Hour, NoExtKeyUsage: true})
		}, now, ""},
		{"server-only EKU", func(t *testing.T) *x509.Certificate {
			return issue(t, ca, pki.Options{CommonName: "dev-3", Validity: time.Hour, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		}, now, fleet.ReasonUsage},
		{"expired", func(t *testing.T) *x509.Certificate {
			return issue(t, ca, pki.Options{CommonName: "dev-4", NotBefore: now.Add(-2 * time.Hour), NotAfter: now.Add(-time.Hour), ExtKeyUsage: client})
		}, now, fleet.ReasonValidity},
		{"not yet valid", func(t *testing.T) *x509.Certificate {
			return issue(t, ca, pki.Options{CommonName: "dev-5", NotBefore: now.Add(time.Hour), Validity: time.Hour, ExtKeyUsage: client})
		}, now, fleet.ReasonValidity},
		{"other CA", func(t *testing.T) *x509.Certificate {
			return issue(t, other, pki.Options{CommonName: "dev-6", Validity: time.Hour, ExtKeyUsage: client})
		}, now, fleet.ReasonChain},
		{"signed by the root, not the registered intermediate", func(t *testing.T) *x509.Certificate {
			return issue(t, root, pki.Options{CommonName: "dev-7", Validity: time.Hour, ExtKeyUsage: client})
		}, now, fleet.ReasonChain},
		{"CN not a thing name", func(t *testing.T) *x509.Certificate {
			return issue(t, ca, pki.Options{CommonName: "bad name", Validity: time.Hour, ExtKeyUsage: client})
		}, now, fleet.ReasonThingName},
		{"empty CN", func(t *testing.T) *x509.Certificate {
			return issue(t, ca, pki.Options{Validity: time.Hour, ExtKeyUsage: client})
		}, now, fleet.ReasonThingName},
		{"CA expired at validation time", func(t *testing.T) *x509.Certificate {
			return issue(t, ca, pki.Options{CommonName: "dev-8", NotBefore: now, NotAfter: now.Add(100 * 24 * time.Hour), ExtKeyUsage: client})
		}, now.Add(72 * time.Hour), fleet.ReasonValidity},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cert := tc.cert(t)
			name, err := fleet.ValidateDeviceCertificate(cert, ca.Cert, tc.at)
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("valid certificate refused: %v", err)
				}
				if name != cert.Subject.CommonName {
					t.Errorf("thing name %q, want %q", name, cert.Subject.CommonName)
				}
				return
			}
			var ice *fleet.InvalidCertificateError
			if !errors.As(err, &ice) {
				t.Fatalf("error %v, want *InvalidCertificateError(%s)", err, tc.reason)
			}
			if ice.Reason != tc.reason {
				t.Errorf("reason %s, want %s (%v)", ice.Reason, tc.reason, err)
			}
			if !errors.Is(err, fleet.ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid")
			}
		})
	}
}

func TestParseCertificatePEM(t *testing.T) {
	root, err := pki.NewRoot("Root", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key, err := root.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	c, err := fleet.ParseCertificatePEM(key + root.CertPEM())
	if err != nil {
		t.Fatalf("certificate after a key block: %v", err)
	}
	if fleet.CertificateID(c) != fleet.CertificateID(root.Cert) || len(fleet.CertificateID(c)) != 64 {
		t.Errorf("certificate id %q", fleet.CertificateID(c))
	}
	if fleet.EncodePEM(c) != root.CertPEM() {
		t.Error("EncodePEM differs from the PEM parsed")
	}
	for _, bad := range []string{"", "not pem", key, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"} {
		if _, err := fleet.ParseCertificatePEM(bad); !errors.Is(err, fleet.ErrInvalid) {
			t.Errorf("ParseCertificatePEM(%.30q) = %v, want ErrInvalid", bad, err)
		}
	}
}

const certID = "4f1c2ee8b9e4a1e3e5d2f5e0c0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3"
const caID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestParseCertificateRegisteredEvent(t *testing.T) {
	tests := []struct {
		name    string
		json    string
		regTS   string
		wantErr bool
	}{
		{"string registration timestamp", `{"certificateId":"` + certID + `","caCertificateId":"` + caID + `","timestamp":1700000000000,"certificateStatus":"PENDING_ACTIVATION","awsAccountId":"123456789012","certificateRegistrationTimestamp":"1700000000000"}`, "1700000000000", false},
		{"null registration timestamp", `{"certificateId":"` + certID + `","caCertificateId":"` + caID + `","timestamp":1,"certificateStatus":"PENDING_ACTIVATION","awsAccountId":"1","certificateRegistrationTimestamp":null}`, "", false},
		{"number registration timestamp and unknown fields", `{"certificateId":"` + certID + `","caCertificateId":"` + caID + `","timestamp":1,"certificateRegistrationTimestamp":17,"extra":{"a":1}}`, "17", false},
		{"missing certificate id", `{"caCertificateId":"` + caID + `"}`, "", true},
		{"upper-case id", `{"certificateId":"` + strings.ToUpper(certID) + `","caCertificateId":"` + caID + `"}`, "", true},
		{"bad ca id", `{"certificateId":"` + certID + `","caCertificateId":"xyz"}`, "", true},
		{"timestamp as object", `{"certificateId":"` + certID + `","caCertificateId":"` + caID + `","timestamp":{}}`, "", true},
		{"registration timestamp as object", `{"certificateId":"` + certID + `","caCertificateId":"` + caID + `","certificateRegistrationTimestamp":{}}`, "", true},
		{"not json", `hello`, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := fleet.ParseCertificateRegisteredEvent([]byte(tc.json))
			if tc.wantErr {
				if !errors.Is(err, fleet.ErrInvalid) {
					t.Fatalf("err %v, want ErrInvalid", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ev.CertificateID != certID || ev.CACertificateID != caID || string(ev.RegistrationTimestamp) != tc.regTS {
				t.Errorf("decoded %+v", ev)
			}
		})
	}
}

func TestParseTelemetryEvent(t *testing.T) {
	tests := []struct {
		name    string
		json    string
		message string
		wantErr bool
	}{
		{"string message", `{"message":"Hello From Test-001","device":"test_001","ts":1700000000123,"id":"9f0c4a1e-1b2c-4d5e-8f90-a1b2c3d4e5f6"}`, `"Hello From Test-001"`, false},
		{"object message kept as sent", `{"message":{"t": 21.5,"u":"C"},"device":"test_001","ts":1700000000123,"id":"abc"}`, `{"t": 21.5,"u":"C"}`, false},
		{"no message", `{"device":"test_001","ts":1,"id":"a"}`, "", true},
		{"null message", `{"message":null,"device":"test_001","ts":1,"id":"a"}`, "", true},
		{"bad device", `{"message":1,"device":"a/b","ts":1,"id":"a"}`, "", true},
		{"fractional ts", `{"message":1,"device":"d","ts":1.5,"id":"a"}`, "", true},
		{"negative ts", `{"message":1,"device":"d","ts":-1,"id":"a"}`, "", true},
		{"missing id", `{"message":1,"device":"d","ts":1}`, "", true},
		{"id with slash", `{"message":1,"device":"d","ts":1,"id":"a/b"}`, "", true},
		{"too big", `{"message":"` + strings.Repeat("x", 100) + `","device":"d","ts":1,"id":"a"}`, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := fleet.ParseTelemetryEvent([]byte(tc.json), 64)
			if tc.wantErr {
				if !errors.Is(err, fleet.ErrInvalid) {
					t.Fatalf("err %v, want ErrInvalid", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(ev.Message) != tc.message {
				t.Errorf("message %s, want %s", ev.Message, tc.message)
			}
		})
	}
}

func TestSortKeyOrdersByTimeAndKeepsSameMillisecond(t *testing.T) {
	a, b := fleet.SortKey(999, "b"), fleet.SortKey(1000, "a")
	if a >= b {
		t.Errorf("%s sorts after %s", a, b)
	}
	if fleet.SortKey(5, "x") == fleet.SortKey(5, "y") {
		t.Error("two messages in the same millisecond share a sort key")
	}
	if got := fleet.SortKey(1700000000123, "id"); got != "1700000000123#id" {
		t.Errorf("SortKey = %s", got)
	}
}

func FuzzParseCertificateRegisteredEvent(f *testing.F) {
	f.Add([]byte(`{"certificateId":"` + certID + `","caCertificateId":"` + caID + `","timestamp":1,"certificateRegistrationTimestamp":null}`))
	f.Add([]byte(`{"certificateRegistrationTimestamp":"x"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := fleet.ParseCertificateRegisteredEvent(b)
		if err != nil {
			if !errors.Is(err, fleet.ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if len(ev.CertificateID) != 64 || len(ev.CACertificateID) != 64 {
			t.Fatalf("accepted ids %q %q", ev.CertificateID, ev.CACertificateID)
		}
	})
}

func FuzzParseTelemetryEvent(f *testing.F) {
	f.Add([]byte(`{"message":"hi","device":"test_001","ts":1700000000123,"id":"9f0c4a1e"}`), 8192)
	f.Add([]byte(`{"message":{"a":[1,2]},"device":"d","ts":1e3,"id":"x"}`), 16)
	f.Fuzz(func(t *testing.T, b []byte, limit int) {
		ev, err := fleet.ParseTelemetryEvent(b, limit)
		if err != nil {
			if !errors.Is(err, fleet.ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if fleet.ValidateThingName(ev.Device) != nil || ev.TS <= 0 || len(ev.Message) == 0 || (limit > 0 && len(ev.Message) > limit) {
			t.Fatalf("accepted invalid event %+v", ev)
		}
	})
}

func FuzzParseCertificatePEM(f *testing.F) {
	root, err := pki.NewRoot("Root", time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(root.CertPEM())
	f.Add("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := fleet.ParseCertificatePEM(s)
		if err != nil {
			if !errors.Is(err, fleet.ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if len(fleet.CertificateID(c)) != 64 {
			t.Fatal("bad id")
		}
	})
}

func TestValidatePolicyName(t *testing.T) {
	for name, ok := range map[string]bool{
		"mriot-device": true, "mriot.device": true, "Iot-Device-Policy": true, "a+b=c,d.e@f_g-h": true,
		"": false, "a b": false, "a:b": false, "a/b": false, "a#b": false, strings.Repeat("p", 128): true, strings.Repeat("p", 129): false,
	} {
		if err := fleet.ValidatePolicyName(name); (err == nil) != ok {
			t.Errorf("ValidatePolicyName(%q) = %v, want ok=%v", name, err, ok)
		} else if err != nil && !errors.Is(err, fleet.ErrInvalid) {
			t.Errorf("ValidatePolicyName(%q) = %v, not ErrInvalid", name, err)
		}
	}
}
