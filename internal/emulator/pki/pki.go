// Package pki makes the certificates a fleet needs: a root CA, an
// intermediate CA that signs devices and the server, server certificates
// for the data endpoint, and device certificates whose subject CN is the
// thing name. Keys are ECDSA P-256, which AWS IoT accepts for device and CA
// certificates and which is fast enough to mint thousands in a test.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"strings"
	"time"
)

// Authority is a CA: its certificate and signing key.
type Authority struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// Chain holds the certificates above Cert, nearest first (empty for a root).
	Chain []*x509.Certificate
}

// Leaf is an end-entity certificate and its key.
type Leaf struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// Chain holds the issuing CAs, nearest first.
	Chain []*x509.Certificate
}

// Options shapes a certificate. Zero fields take defaults.
type Options struct {
	CommonName string
	// Organization defaults to "mriot".
	Organization string
	NotBefore    time.Time // default: now - 1 minute
	NotAfter     time.Time // default: NotBefore + Validity
	Validity     time.Duration
	IsCA         bool
	// MaxPathLen for a CA: 0 means "can sign only leaves" (MaxPathLenZero).
	MaxPathLen int
	// ExtKeyUsage overrides the default (clientAuth for devices, serverAuth for
	// servers, none for CAs). Set NoExtKeyUsage to leave the extension out.
	ExtKeyUsage   []x509.ExtKeyUsage
	NoExtKeyUsage bool
	DNSNames      []string
	IPAddresses   []net.IP
}

var serialLimit = new(big.Int).Lsh(big.NewInt(1), 127)

func newKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

func template(o Options) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, serialLimit)
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	nb := o.NotBefore
	if nb.IsZero() {
		nb = time.Now().Add(-time.Minute)
	}
	na := o.NotAfter
	if na.IsZero() {
		v := o.Validity
		if v == 0 {
			v = 365 * 24 * time.Hour
		}
		na = nb.Add(v)
	}
	org := o.Organization
	if org == "" {
		org = "mriot"
	}
	t := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: o.CommonName, Organization: []string{org}},
		NotBefore:    nb,
		NotAfter:     na,
		DNSNames:     o.DNSNames,
		IPAddresses:  o.IPAddresses,
	}
	if o.IsCA {
		t.IsCA = true
		t.BasicConstraintsValid = true
		t.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
		t.MaxPathLen = o.MaxPathLen
		t.MaxPathLenZero = o.MaxPathLen == 0
	} else {
		t.BasicConstraintsValid = true
		t.KeyUsage = x509.KeyUsageDigitalSignature
	}
	if !o.NoExtKeyUsage {
		t.ExtKeyUsage = o.ExtKeyUsage
	}
	return t, nil
}

// NewRoot makes a self-signed root CA that may sign one level of intermediates.
func NewRoot(cn string, validity time.Duration) (*Authority, error) {
	return NewRootWith(Options{CommonName: cn, Validity: validity, IsCA: true, MaxPathLen: 1})
}

// NewRootWith makes a self-signed CA shaped by o (IsCA is forced).
func NewRootWith(o Options) (*Authority, error) {
	o.IsCA = true
	key, err := newKey()
	if err != nil {
		return nil, fmt.Errorf("root key: %w", err)
	}
	t, err := template(o)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, t, t, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create root certificate %q: %w", o.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse root certificate: %w", err)
	}
	return &Authority{Cert: cert, Key: key}, nil
}

// NewIntermediate makes an intermediate CA signed by a that signs leaves only.
func (a *Authority) NewIntermediate(cn string, validity time.Duration) (*Authority, error) {
	leaf, err := a.Issue(Options{CommonName: cn, Validity: validity, IsCA: true, MaxPathLen: 0})
	if err != nil {
		return nil, err
	}
	return &Authority{Cert: leaf.Cert, Key: leaf.Key, Chain: leaf.Chain}, nil
}

// IssueServer makes a server certificate for cn with the given SANs (names
// or IP addresses).
func (a *Authority) IssueServer(cn string, sans []string, validity time.Duration) (*Leaf, error) {
	o := Options{CommonName: cn, Validity: validity, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	o.DNSNames = append(o.DNSNames, cn)
	for _, s := range sans {
		if ip := net.ParseIP(s); ip != nil {
			o.IPAddresses = append(o.IPAddresses, ip)
		} else if s != cn {
			o.DNSNames = append(o.DNSNames, s)
		}
	}
	return a.Issue(o)
}

// IssueDevice makes a device certificate whose subject CN is the thing name,
// for client authentication.
func (a *Authority) IssueDevice(thingName string, validity time.Duration) (*Leaf, error) {
	return a.Issue(Options{CommonName: thingName, Validity: validity, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
}

// Issue makes any certificate signed by a, shaped by o.
func (a *Authority) Issue(o Options) (*Leaf, error) {
	key, err := newKey()
	if err != nil {
		return nil, fmt.Errorf("key for %q: %w", o.CommonName, err)
	}
	t, err := template(o)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, t, a.Cert, key.Public(), a.Key)
	if err != nil {
		return nil, fmt.Errorf("create certificate %q: %w", o.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse certificate %q: %w", o.CommonName, err)
	}
	chain := append([]*x509.Certificate{a.Cert}, a.Chain...)
	return &Leaf{Cert: cert, Key: key, Chain: chain}, nil
}

// CertPEM is the CA certificate in PEM.
func (a *Authority) CertPEM() string { return CertPEM(a.Cert) }

// KeyPEM is the CA key in PEM (PKCS #8).
func (a *Authority) KeyPEM() (string, error) { return KeyPEM(a.Key) }

// CertPEM is the leaf certificate in PEM.
func (l *Leaf) CertPEM() string { return CertPEM(l.Cert) }

// ChainPEM is the leaf followed by its issuing CAs, as a server presents it.
func (l *Leaf) ChainPEM() string {
	var s strings.Builder
	s.WriteString(CertPEM(l.Cert))
	for _, c := range l.Chain {
		s.WriteString(CertPEM(c))
	}
	return s.String()
}

// KeyPEM is the leaf key in PEM (PKCS #8).
func (l *Leaf) KeyPEM() (string, error) { return KeyPEM(l.Key) }

// CertPEM encodes a certificate as PEM.
func CertPEM(c *x509.Certificate) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
}

// KeyPEM encodes a private key as PKCS #8 PEM.
func KeyPEM(k crypto.Signer) (string, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return "", fmt.Errorf("marshal key: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), nil
}
