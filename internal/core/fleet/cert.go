package fleet

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"time"
)

// ParseCertificatePEM decodes the first CERTIFICATE block of pemText. Other
// block types before it are skipped. The error wraps ErrInvalid.
func ParseCertificatePEM(pemText string) (*x509.Certificate, error) {
	rest := []byte(pemText)
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, fmt.Errorf("no CERTIFICATE block in PEM: %w", ErrInvalid)
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w: %w", ErrInvalid, err)
		}
		return cert, nil
	}
}

// CertificateID is the id AWS IoT gives a certificate: the hex SHA-256 of its DER.
func CertificateID(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

// EncodePEM returns the PEM text of cert.
func EncodePEM(cert *x509.Certificate) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}))
}

// Rejection reasons of ValidateDeviceCertificate, for logs and metrics.
const (
	ReasonThingName    = "invalid_thing_name"
	ReasonChain        = "not_signed_by_ca"
	ReasonValidity     = "outside_validity"
	ReasonUsage        = "no_client_auth"
	ReasonMalformed    = "malformed"
	ReasonCAMismatch   = "ca_mismatch"
	ReasonNotPermitted = "not_permitted"
)

// InvalidCertificateError says why a device certificate is refused. It wraps
// ErrInvalid.
type InvalidCertificateError struct {
	Reason string // one of the Reason constants
	Detail string
	Err    error // the underlying error, if any
}

func (e *InvalidCertificateError) Error() string {
	msg := "invalid device certificate (" + e.Reason + "): " + e.Detail
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns ErrInvalid and the underlying error.
func (e *InvalidCertificateError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrInvalid}
	}
	return []error{ErrInvalid, e.Err}
}

// ValidateDeviceCertificate checks a device certificate against the CA
// certificate that registered it, at time now: the subject CN is a valid thing
// name, the certificate chains to ca, it and ca are within their validity
// periods, and, where the extended key usage extension is present, it allows
// client authentication. The CA is taken as the trust anchor: it is the CA
// registered in AWS IoT (typically the intermediate). It returns the thing name.
func ValidateDeviceCertificate(cert, ca *x509.Certificate, now time.Time) (string, error) {
	name := cert.Subject.CommonName
	if err := ValidateThingName(name); err != nil {
		return "", &InvalidCertificateError{Reason: ReasonThingName, Detail: "subject CN", Err: err}
	}
	if now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
		return "", &InvalidCertificateError{Reason: ReasonValidity,
			Detail: fmt.Sprintf("valid %s to %s, now %s", cert.NotBefore.UTC().Format(time.RFC3339), cert.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))}
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	_, err := cert.Verify(x509.VerifyOptions{
		Roots:       roots,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err == nil {
		return name, nil
	}
	var invalid x509.CertificateInvalidError
	var unknown x509.UnknownAuthorityError
	switch {
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return "", &InvalidCertificateError{Reason: ReasonValidity, Detail: "the CA is outside its validity period", Err: err}
	case errors.As(err, &invalid) && invalid.Reason == x509.IncompatibleUsage:
		return "", &InvalidCertificateError{Reason: ReasonUsage, Detail: "extended key usage does not allow client auth", Err: err}
	case errors.As(err, &unknown):
		return "", &InvalidCertificateError{Reason: ReasonChain, Detail: "does not chain to CA " + ca.Subject.CommonName, Err: err}
	default:
		return "", &InvalidCertificateError{Reason: ReasonChain, Detail: "chain verification failed", Err: err}
	}
}
