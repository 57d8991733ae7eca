package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Store keeps a fleet's PKI in a directory (mriot's --state-dir):
//
//	root-ca.crt, root-ca.key                 the root CA
//	intermediate-ca.crt, intermediate-ca.key the CA registered in AWS IoT (signs devices and the server)
//	ca-chain.crt                             intermediate + root, as the article's ca-chain.crt.pem
//	server.crt (with chain), server.key      the data endpoint's certificate for iot.example.com
//	devices/NAME.crt, devices/NAME.key       device certificates, CN = NAME
type Store struct{ Dir string }

// File names inside a Store.
const (
	RootCertFile   = "root-ca.crt"
	RootKeyFile    = "root-ca.key"
	InterCertFile  = "intermediate-ca.crt"
	InterKeyFile   = "intermediate-ca.key"
	ChainFile      = "ca-chain.crt"
	ServerCertFile = "server.crt"
	ServerKeyFile  = "server.key"
	DevicesDir     = "devices"
)

// ServerName is the data endpoint's host name, as the devices know it.
const ServerName = "iot.example.com"

// Validity periods of what Init and Device make.
const (
	RootValidity   = 20 * 365 * 24 * time.Hour
	InterValidity  = 10 * 365 * 24 * time.Hour
	ServerValidity = 375 * 24 * time.Hour
	DeviceValidity = 365 * 24 * time.Hour
)

func (s Store) path(name string) string { return filepath.Join(s.Dir, name) }

// Exists reports whether the store holds an intermediate CA.
func (s Store) Exists() bool {
	_, err := os.Stat(s.path(InterKeyFile))
	return err == nil
}

// Init creates the root CA, the intermediate CA and the server certificate
// (CN iot.example.com, SANs localhost and 127.0.0.1) unless they exist. It
// returns the intermediate CA.
func (s Store) Init() (*Authority, error) {
	if s.Exists() {
		return s.Intermediate()
	}
	if err := os.MkdirAll(filepath.Join(s.Dir, DevicesDir), 0o700); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	root, err := NewRoot("mriot Root CA", RootValidity)
	if err != nil {
		return nil, err
	}
	inter, err := root.NewIntermediate("mriot Intermediate CA", InterValidity)
	if err != nil {
		return nil, err
	}
	srv, err := inter.IssueServer(ServerName, []string{"localhost", "127.0.0.1"}, ServerValidity)
	if err != nil {
		return nil, err
	}
	if err := s.writeAuthority(RootCertFile, RootKeyFile, root); err != nil {
		return nil, err
	}
	if err := s.writeAuthority(InterCertFile, InterKeyFile, inter); err != nil {
		return nil, err
	}
	if err := writeFile(s.path(ChainFile), inter.CertPEM()+root.CertPEM(), 0o644); err != nil {
		return nil, err
	}
	if err := s.writeLeaf(ServerCertFile, ServerKeyFile, srv); err != nil {
		return nil, err
	}
	return inter, nil
}

// Intermediate loads the intermediate CA with its root as chain.
func (s Store) Intermediate() (*Authority, error) {
	inter, err := LoadAuthority(s.path(InterCertFile), s.path(InterKeyFile))
	if err != nil {
		return nil, err
	}
	root, err := LoadCertificates(s.path(RootCertFile))
	if err != nil {
		return nil, err
	}
	inter.Chain = root
	return inter, nil
}

// Device issues (or loads, when present) the certificate of device name and
// returns the paths of its certificate and key files.
func (s Store) Device(name string) (certFile, keyFile string, err error) {
	certFile = filepath.Join(s.Dir, DevicesDir, name+".crt")
	keyFile = filepath.Join(s.Dir, DevicesDir, name+".key")
	if _, err := os.Stat(certFile); err == nil {
		return certFile, keyFile, nil
	}
	inter, err := s.Intermediate()
	if err != nil {
		return "", "", err
	}
	leaf, err := inter.IssueDevice(name, DeviceValidity)
	if err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(filepath.Dir(certFile), 0o700); err != nil {
		return "", "", fmt.Errorf("create devices dir: %w", err)
	}
	if err := s.writeLeaf(filepath.Join(DevicesDir, name+".crt"), filepath.Join(DevicesDir, name+".key"), leaf); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// ServerCertificate loads the data endpoint's certificate with its chain.
func (s Store) ServerCertificate() (tls.Certificate, error) {
	return LoadServerCertificate(s.path(ServerCertFile), s.path(ServerKeyFile))
}

// RootPEM is the root CA certificate, the --cafile a device uses.
func (s Store) RootPEM() ([]byte, error) { return os.ReadFile(s.path(RootCertFile)) }

// Path returns the path of a file in the store.
func (s Store) Path(name string) string { return s.path(name) }

func (s Store) writeAuthority(certName, keyName string, a *Authority) error {
	key, err := a.KeyPEM()
	if err != nil {
		return err
	}
	if err := writeFile(s.path(certName), a.CertPEM(), 0o644); err != nil {
		return err
	}
	return writeFile(s.path(keyName), key, 0o600)
}

func (s Store) writeLeaf(certName, keyName string, l *Leaf) error {
	key, err := l.KeyPEM()
	if err != nil {
		return err
	}
	certText := l.CertPEM()
	if certName == ServerCertFile {
		// A server presents its chain (without the root, which clients hold).
		certText = CertPEM(l.Cert)
		for _, c := range l.Chain {
			if !isSelfSigned(c) {
				certText += CertPEM(c)
			}
		}
	}
	if err := writeFile(s.path(certName), certText, 0o644); err != nil {
		return err
	}
	return writeFile(s.path(keyName), key, 0o600)
}

func isSelfSigned(c *x509.Certificate) bool {
	return c.CheckSignatureFrom(c) == nil
}

func writeFile(path, text string, mode os.FileMode) error {
	if err := os.WriteFile(path, []byte(text), mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// LoadCertificates reads every CERTIFICATE block of a PEM file.
func LoadCertificates(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	certs, err := ParseCertificatesPEM(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return certs, nil
}

// ParseCertificatesPEM parses every CERTIFICATE block; it fails when there is none.
func ParseCertificatesPEM(b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no CERTIFICATE block")
	}
	return certs, nil
}

// ParsePrivateKeyPEM parses a PKCS #8, PKCS #1 (RSA) or SEC 1 (EC) private
// key, as openssl and Go write them.
func ParsePrivateKeyPEM(b []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return nil, errors.New("no private key block")
		}
		switch block.Type {
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parse PKCS #8 key: %w", err)
			}
			s, ok := k.(crypto.Signer)
			if !ok {
				return nil, fmt.Errorf("key type %T cannot sign", k)
			}
			return s, nil
		case "RSA PRIVATE KEY":
			k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parse RSA key: %w", err)
			}
			return k, nil
		case "EC PRIVATE KEY":
			k, err := x509.ParseECPrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parse EC key: %w", err)
			}
			return k, nil
		}
	}
}

// LoadAuthority reads a CA certificate and key.
func LoadAuthority(certPath, keyPath string) (*Authority, error) {
	certs, err := LoadCertificates(certPath)
	if err != nil {
		return nil, err
	}
	kb, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", keyPath, err)
	}
	key, err := ParsePrivateKeyPEM(kb)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyPath, err)
	}
	if !publicKeysEqual(certs[0].PublicKey, key.Public()) {
		return nil, fmt.Errorf("%s does not match the key in %s", certPath, keyPath)
	}
	return &Authority{Cert: certs[0], Key: key, Chain: certs[1:]}, nil
}

// LoadServerCertificate reads a server certificate file (which may hold the
// chain after the leaf, as the article's files do) and its key.
func LoadServerCertificate(certPath, keyPath string) (tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load server certificate %s: %w", certPath, err)
	}
	return c, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	switch k := a.(type) {
	case *ecdsa.PublicKey:
		return k.Equal(b)
	case *rsa.PublicKey:
		return k.Equal(b)
	case interface{ Equal(crypto.PublicKey) bool }:
		return k.Equal(b)
	}
	return false
}

// PreviousSuffix names the files a renewal keeps the previous certificate
// and key in: devices/NAME.previous.crt and .key.
const PreviousSuffix = ".previous"

// RenewDevice issues a new key and certificate for device name, which must
// have one already (Device), and makes it the device's: devices/NAME.crt
// and .key; the previous pair moves to devices/NAME.previous.crt and .key
// (a device may use either during the rotation's grace). The new
// certificate's NotBefore is later than the previous one's, even within
// the same second (NotBefore has a precision of a second): a rotation
// accepts only a certificate issued after the current one.
func (s Store) RenewDevice(name string) (certFile, keyFile string, err error) {
	certFile = filepath.Join(s.Dir, DevicesDir, name+".crt")
	keyFile = filepath.Join(s.Dir, DevicesDir, name+".key")
	prev, err := LoadCertificates(certFile)
	if err != nil {
		return "", "", fmt.Errorf("renew %s: no certificate to renew (issue one first: mriot pki device %s): %w", name, name, err)
	}
	inter, err := s.Intermediate()
	if err != nil {
		return "", "", err
	}
	nb := time.Now().Add(-time.Minute).Truncate(time.Second)
	if floor := prev[0].NotBefore.Add(time.Second); nb.Before(floor) {
		nb = floor
	}
	leaf, err := inter.Issue(Options{CommonName: name, NotBefore: nb, Validity: DeviceValidity,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		return "", "", err
	}
	base := filepath.Join(DevicesDir, name)
	for _, ext := range []string{".crt", ".key"} {
		if err := os.Rename(s.path(base+ext), s.path(base+PreviousSuffix+ext)); err != nil {
			return "", "", fmt.Errorf("keep the previous %s of %s: %w", ext, name, err)
		}
	}
	if err := s.writeLeaf(base+".crt", base+".key", leaf); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}
