// Package contracttest holds the port-level test suites that every
// implementation of a port in internal/core/contract must pass: the
// in-memory fakes and the AWS adapters against moto_server. The suites follow
// AWS's documented behaviour; where an emulator departs from it, the suite
// says so at the assertion that meets the departure (Quirks).
package contracttest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/core/contract"
	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/emulator/pki"
)

// Quirks are a backend's departures from AWS's documented behaviour. Each
// one is noted at the assertion it skips; a fake that follows AWS sets none.
type Quirks struct {
	// NoCACertificateIDInDescribe: moto omits caCertificateId in
	// DescribeCertificate.
	NoCACertificateIDInDescribe bool
	// CreateThingReplaces: moto replaces a thing on a duplicate CreateThing
	// with other attributes instead of ResourceAlreadyExistsException.
	CreateThingReplaces bool
	// RegisterWithoutCA: the backend registers a device certificate whose CA
	// is not registered (or is INACTIVE) instead of refusing it.
	RegisterWithoutCA bool
	// RevokedCanBeReactivated: the backend lets a REVOKED certificate become
	// ACTIVE again instead of CertificateStateException.
	RevokedCanBeReactivated bool
	// DeleteThingIgnoresPrincipals: the backend deletes a thing with
	// principals attached instead of refusing.
	DeleteThingIgnoresPrincipals bool
	// DeleteCertificateIgnoresAttachments: the backend deletes a certificate
	// attached to a thing or a policy instead of DeleteConflictException.
	DeleteCertificateIgnoresAttachments bool
	// MalformedCertificateServerError: moto 5.2 (with use_valid_cert) fails
	// with HTTP 500 on a certificate PEM it cannot parse instead of
	// CertificateValidationException.
	MalformedCertificateServerError bool
	// CACertificateARNIsCert: moto gives a CA certificate an ARN ending in
	// :cert/<id> instead of :cacert/<id>.
	CACertificateARNIsCert bool
	// NoCAAutoRegistration: moto ignores allowAutoRegistration and describes
	// no autoRegistrationStatus.
	NoCAAutoRegistration bool
	// DetachNotAttachedIsNotFound: moto answers ResourceNotFoundException
	// when detaching a principal from a thing, or a policy from a principal,
	// that is not attached, instead of succeeding.
	DetachNotAttachedIsNotFound bool
	// ThingNamesUnchecked: moto creates a thing of any non-empty name
	// (spaces, slashes, over 128 characters) instead of
	// InvalidRequestException.
	ThingNamesUnchecked bool
	// ListCACertificatesUnimplemented: moto 5.2's IoT backend has no
	// ListCACertificates action.
	ListCACertificatesUnimplemented bool
	// CertificatesByCAUnlinked: moto links a device certificate to its CA
	// only when RegisterCertificate is given caCertificatePem, which the
	// port does not send (AWS finds the CA by signature), so
	// ListCertificatesByCA lists none of the certificates registered here.
	CertificatesByCAUnlinked bool
	// CertificatesByCAUnpaged: moto's ListCertificatesByCA ignores pageSize
	// and marker and answers every certificate in one page.
	CertificatesByCAUnpaged bool
}

// RegistryEnv is a fresh registry with the means to arrange its state.
type RegistryEnv struct {
	Registry contract.Registry
	// RegisterCA registers an ACTIVE CA certificate with auto-registration
	// and returns its id.
	RegisterCA func(t *testing.T, caPEM string) string
	// CreatePolicy creates a policy.
	CreatePolicy func(t *testing.T, name, document string)
	Quirks       Quirks
}

const testPolicy = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Connect","Resource":"*"}]}`

// registryFixture is one subtest's registry with a registered CA.
type registryFixture struct {
	t      *testing.T
	env    RegistryEnv
	r      contract.Registry
	ca     *pki.Authority
	caID   string
	suffix string
	ctx    context.Context
}

func newRegistryFixture(t *testing.T, newEnv func(t *testing.T) RegistryEnv) *registryFixture {
	t.Helper()
	env := newEnv(t)
	root, err := pki.NewRoot("contract root", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := root.NewIntermediate("contract intermediate", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f := &registryFixture{t: t, env: env, r: env.Registry, ca: ca, suffix: randomSuffix(t), ctx: context.Background()}
	f.caID = env.RegisterCA(t, ca.CertPEM())
	return f
}

// randomSuffix keeps names of concurrent or repeated runs on a shared
// backend apart.
func randomSuffix(t *testing.T) string {
	t.Helper()
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

func (f *registryFixture) name(base string) string { return base + "-" + f.suffix }

// device issues a device certificate for thing, signed by the fixture's CA.
func (f *registryFixture) device(thing string) *pki.Leaf {
	f.t.Helper()
	leaf, err := f.ca.IssueDevice(thing, time.Hour)
	if err != nil {
		f.t.Fatal(err)
	}
	return leaf
}

// register registers a fresh device certificate with status.
func (f *registryFixture) register(thing string, status fleet.CertStatus) fleet.Certificate {
	f.t.Helper()
	c, err := f.r.RegisterCertificate(f.ctx, f.device(thing).CertPEM(), status)
	if err != nil {
		f.t.Fatalf("RegisterCertificate: %v", err)
	}
	return c
}

func (f *registryFixture) thing(name string, attrs map[string]string) fleet.Thing {
	f.t.Helper()
	th, err := f.r.CreateThing(f.ctx, name, attrs)
	if err != nil {
		f.t.Fatalf("CreateThing %s: %v", name, err)
	}
	return th
}

func (f *registryFixture) policy(name string) string {
	f.t.Helper()
	f.env.CreatePolicy(f.t, name, testPolicy)
	return name
}

func (f *registryFixture) status(id string) fleet.CertStatus {
	f.t.Helper()
	c, err := f.r.DescribeCertificate(f.ctx, id)
	if err != nil {
		f.t.Fatalf("DescribeCertificate %s: %v", id, err)
	}
	return c.Status
}

// unknownCertARN is the ARN a certificate would have in this registry, for
// a certificate that is not registered.
func (f *registryFixture) unknownCertARN(known fleet.Certificate) string {
	f.t.Helper()
	other, err := fleet.ParseCertificatePEM(f.device("unknown").CertPEM())
	if err != nil {
		f.t.Fatal(err)
	}
	return strings.TrimSuffix(known.ARN, known.ID) + fleet.CertificateID(other)
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Fatalf("%s: unexpected error %v", what, err)
	case want != nil && !errors.Is(err, want):
		t.Fatalf("%s: error %v, want one wrapping %q", what, err, want)
	}
}

// TestRegistry runs the contract.Registry contract against fresh environments.
func Registry(t *testing.T, newEnv func(t *testing.T) RegistryEnv) {
	t.Run("RegisterCertificate", func(t *testing.T) { testRegisterCertificate(t, newEnv) })
	t.Run("DescribeCACertificate", func(t *testing.T) { testDescribeCA(t, newEnv) })
	t.Run("UpdateCertificate", func(t *testing.T) { testUpdateCertificate(t, newEnv) })
	t.Run("DeleteCertificate", func(t *testing.T) { testDeleteCertificate(t, newEnv) })
	t.Run("Things", func(t *testing.T) { testThings(t, newEnv) })
	t.Run("DeleteThing", func(t *testing.T) { testDeleteThing(t, newEnv) })
	t.Run("ThingPrincipals", func(t *testing.T) { testThingPrincipals(t, newEnv) })
	t.Run("Policies", func(t *testing.T) { testPolicies(t, newEnv) })
	t.Run("ListThings", func(t *testing.T) { testListThings(t, newEnv) })
	t.Run("ListCACertificates", func(t *testing.T) { testListCACertificates(t, newEnv) })
	t.Run("ListCertificatesByCA", func(t *testing.T) { testListCertificatesByCA(t, newEnv) })
}

// clockSkew is how far a remote backend's clock may be from ours when the
// suite checks the timestamps it gives (SigV4 tolerates five minutes).
const clockSkew = time.Minute

// wantCreatedAt checks a certificate's creationDate: set, not before the
// registration began and not after now.
func wantCreatedAt(t *testing.T, what string, got, registering time.Time) {
	t.Helper()
	now := time.Now()
	switch {
	case got.IsZero():
		t.Errorf("%s: CreatedAt not set", what)
	case got.After(now.Add(clockSkew)):
		t.Errorf("%s: CreatedAt %v is after now (%v)", what, got, now)
	case got.Before(registering.Add(-clockSkew)):
		t.Errorf("%s: CreatedAt %v is before the registration began (%v)", what, got, registering)
	}
}

func testRegisterCertificate(t *testing.T, newEnv func(t *testing.T) RegistryEnv) {
	t.Run("registers with status, id and ARN", func(t *testing.T) {
		for _, status := range []fleet.CertStatus{fleet.CertActive, fleet.CertInactive, fleet.CertPendingActivation} {
			f := newRegistryFixture(t, newEnv)
			leaf := f.device(f.name("reg"))
			registering := time.Now()
			c, err := f.r.RegisterCertificate(f.ctx, leaf.CertPEM(), status)
			wantErr(t, "RegisterCertificate", err, nil)
			wantID := fleet.CertificateID(leaf.Cert)
			if c.ID != wantID {
				t.Errorf("id %s, want SHA-256 of the DER %s", c.ID, wantID)
			}
			if !strings.HasPrefix(c.ARN, "arn:aws:iot:") || !strings.HasSuffix(c.ARN, ":cert/"+wantID) {
				t.Errorf("ARN %q, want arn:aws:iot:<region>:<account>:cert/%s", c.ARN, wantID)
			}
			d, err := f.r.DescribeCertificate(f.ctx, c.ID)
			wantErr(t, "DescribeCertificate", err, nil)
			if d.ID != wantID || d.ARN != c.ARN || d.Status != status {
				t.Errorf("described %+v, want id %s, ARN %s, status %s", d, wantID, c.ARN, status)
			}
			wantCreatedAt(t, "DescribeCertificate", d.CreatedAt, registering)
			// AWS's RegisterCertificate answers without a creationDate; a
			// backend that gives one gives the described one.
			if !c.CreatedAt.IsZero() && !c.CreatedAt.Equal(d.CreatedAt) {
				t.Errorf("registered at %v, described as created at %v", c.CreatedAt, d.CreatedAt)
			}
			// moto: NoCACertificateIDInDescribe.
			if !f.env.Quirks.NoCACertificateIDInDescribe && d.CACertificateID != f.caID {
				t.Errorf("caCertificateId %q, want %q", d.CACertificateID, f.caID)
			}
			got, err := fleet.ParseCertificatePEM(d.PEM)
			if err != nil || fleet.CertificateID(got) != wantID {
				t.Errorf("described PEM is not the certificate: %v", err)
			}
		}
	})
	t.Run("second registration is ErrAlreadyExists and changes nothing", func(t *testing.T) {
		f := newRegistryFixture(t, newEnv)
		leaf := f.device(f.name("dup"))
		c, err := f.r.RegisterCertificate(f.ctx, leaf.CertPEM(), fleet.CertInactive)
		wantErr(t, "first RegisterCertificate", err, nil)
		_, err = f.r.RegisterCertificate(f.ctx, leaf.CertPEM(), fleet.CertActive)
		wantErr(t, "second RegisterCertificate", err, fleet.ErrAlreadyExists)
		if s := f.status(c.ID); s != fleet.CertInactive {
			t.Errorf("status after refused registration %s, want INACTIVE", s)
		}
	})
	t.Run("refusals", func(t *testing.T) {
		f := newRegistryFixture(t, newEnv)
		otherRoot, err := pki.NewRoot("unregistered root", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		stranger, err := otherRoot.IssueDevice(f.name("stranger"), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name  string
			pem   string
			quirk bool
		}{
			{"not PEM", "hello", false},
			{"PEM without a certificate", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", false},
			{"garbage certificate", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", false},
			// RegisterWithoutCA: the backend does not check the issuer.
			{"CA not registered", stranger.CertPEM(), f.env.Quirks.RegisterWithoutCA},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if tt.quirk {
					t.Skip("backend quirk: registers certificates of unregistered CAs")
				}
				_, err := f.r.RegisterCertificate(f.ctx, tt.pem, fleet.CertActive)
				// MalformedCertificateServerError: moto fails with HTTP 500;
				// the certificate must still be refused.
				if f.env.Quirks.MalformedCertificateServerError && tt.name != "CA not registered" {
					if err == nil {
						t.Fatal("RegisterCertificate accepted a malformed certificate")
					}
					return
				}
				wantErr(t, "RegisterCertificate", err, fleet.ErrInvalid)
			})
		}
	})
	t.Run("DescribeCertificate of an unknown id is ErrNotFound", func(t *testing.T) {
		f := newRegistryFixture(t, newEnv)
		leaf := f.device("nobody")
		_, err := f.r.DescribeCertificate(f.ctx, fleet.CertificateID(leaf.Cert))
		wantErr(t, "DescribeCertificate", err, fleet.ErrNotFound)
	})
}

func testDescribeCA(t *testing.T, newEnv func(t *testing.T) RegistryEnv) {
	f := newRegistryFixture(t, newEnv)
	ca, err := f.r.DescribeCACertificate(f.ctx, f.caID)
	wantErr(t, "DescribeCACertificate", err, nil)
	if ca.ID != fleet.CertificateID(f.ca.Cert) || ca.ID != f.caID {
		t.Errorf("CA id %s, want %s", ca.ID, fleet.CertificateID(f.ca.Cert))
	}
	if ca.Status != fleet.CertActive {
		t.Errorf("CA status %s, want ACTIVE", ca.Status)
	}
	wantARN := ":cacert/" + ca.ID
	if f.env.Quirks.CACertificateARNIsCert { // moto's CA ARN ends in :cert/<id>
		wantARN = ":cert/" + ca.ID
	}
	if !strings.HasSuffix(ca.ARN, wantARN) {
		t.Errorf("CA ARN %q, want ...%s", ca.ARN, wantARN)
	}
	// NoCAAutoRegistration: moto does not keep allowAutoRegistration.
	if !f.env.Quirks.NoCAAutoRegistration && !ca.AutoRegistration {
		t.Errorf("CA registered with auto-registration reads back without it")
	}
	other, err := pki.NewRoot("other", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.r.DescribeCACertificate(f.ctx, fleet.CertificateID(other.Cert))
	wantErr(t, "DescribeCACertificate unknown", err, fleet.ErrNotFound)
}

func testUpdateCertificate(t *testing.T, newEnv func(t *testing.T) RegistryEnv) {
	f := newRegistryFixture(t, newEnv)
	tests := []struct {
		name    string
		from    fleet.CertStatus
		to      fleet.CertStatus
		wantErr error
		want    fleet.CertStatus
		quirk   bool
	}{
		{"activate pending", fleet.CertPendingActivation, fleet.CertActive, nil, fleet.CertActive, false},
		{"deactivate", fleet.CertActive, fleet.CertInactive, nil, fleet.CertInactive, false},
		{"reactivate inactive", fleet.CertInactive, fleet.CertActive, nil, fleet.CertActive, false},
		{"same status", fleet.CertActive, fleet.CertActive, nil, fleet.CertActive, false},
		{"revoke", fleet.CertActive, fleet.CertRevoked, nil, fleet.CertRevoked, false},
		{"revoked stays revoked", fleet.CertRevoked, fleet.CertRevoked, nil, fleet.CertRevoked, false},
		// RevokedCanBeReactivated: the backend lets it through.
		{"revoked cannot be re-activated", fleet.CertRevoked, fleet.CertActive, fleet.ErrInvalid, fleet.CertRevoked, f.env.Quirks.RevokedCanBeReactivated},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.quirk {
				t.Skip("backend quirk: a REVOKED certificate can be re-activated")
			}
			c := f.register(f.name("upd")+"-"+string(rune('a'+i)), tt.from)
			err := f.r.UpdateCertificate(f.ctx, c.ID, tt.to)
			wantErr(t, "UpdateCertificate", err, tt.wantErr)
			if s := f.status(c.ID); s != tt.want {
				t.Errorf("status %s, want %s", s, tt.want)
			}
		})
	}
	t.Run("unknown is ErrNotFound", func(t *testing.T) {
		err := f.r.UpdateCertificate(f.ctx, fleet.CertificateID(f.device("nobody").Cert), fleet.CertActive)
		wantErr(t, "UpdateCertificate", err, fleet.ErrNotFound)
	})
}

func testDeleteCertificate(t *testing.T, newEnv func(t *testing.T) RegistryEnv) {
	f := newRegistryFixture(t, newEnv)
	pol := f.policy(f.name("delpol"))
	tests := []struct {
		name    string
		status  fleet.CertStatus
		thing   bool
		policy  bool
		wantErr error
		quirk   bool
	}{
		{"inactive and detached", fleet.CertInactive, false, false, nil, false},
		{"revoked and detached", fleet.CertRevoked, false, false, nil, false},
		{"pending activation", fleet.CertPendingActivation, false, false, nil, false},
		{"active", fleet.CertActive, false, false, fleet.ErrDeleteConflict, false},
		// DeleteCertificateIgnoresAttachments: the backend deletes anyway.
		{"attached to a thing", fleet.CertInactive, true, false, fleet.ErrDeleteConflict, f.env.Quirks.DeleteCertificateIgnoresAttachments},
		{"attached to a policy", fleet.CertInactive, false, true, fleet.ErrDeleteConflict, f.env.Quirks.DeleteCertificateIgnoresAttachments},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.quirk {
				t.Skip("backend quirk: deletes attached certificates")
			}
			name := f.name("del") + "-" + string(rune('a'+i))
			c := f.register(name, tt.status)
			if tt.thing {
				f.thing(name, nil)
				wantErr(t, "AttachThingPrincipal", f.r.AttachThingPrincipal(f.ctx, name, c.ARN), nil)
			}
			if tt.policy {
				wantErr(t, "AttachPolicy", f.r.AttachPolicy(f.ctx, pol, c.ARN), nil)
			}
			err := f.r.DeleteCertificate(f.ctx, c.ID)
			wantErr(t, "DeleteCertificate", err, tt.wantErr)
			_, err = f.r.DescribeCertificate(f.ctx, c.ID)
			if tt.wantErr == nil {
				wantErr(t, "DescribeCertificate after delete", err, fleet.ErrNotFound)
			} else {
				wantErr(t, "DescribeCertificate after refused delete", err, nil)
			}
		})
	}
	t.Run("unknown is ErrNotFound", func(t *testing.T) {
		err := f.r.DeleteCertificate(f.ctx, fleet.CertificateID(f.device("nobody").Cert))
		wantErr(t, "DeleteCertificate", err, fleet.ErrNotFound)
	})
}

func sameAttrs(a, b map[string]string) bool {
	return len(a) == len(b) && (len(a) == 0 || reflect.DeepEqual(a, b))
}

func testThings(t *testing.T, newEnv func(t *testing.T) RegistryEnv) {
	f := newRegistryFixture(t, newEnv)
	name := f.name("thing")
	attrs := map[string]string{"origin": "eu-west-1", "cert": "abc"}
	th := f.thing(name, attrs)
	if th.Name != name || !strings.HasPrefix(th.ARN, "arn:aws:iot:") || !strings.HasSuffix(th.ARN, ":thing/"+name) {
		t.Errorf("created %+v, want name %s and ARN ...:thing/%s", th, name, name)
	}
	t.Run("DescribeThing", func(t *testing.T) {
		d, err := f.r.DescribeThing(f.ctx, name)
		wantErr(t, "DescribeThing", err, nil)
		if d.Name != name || d.ARN != th.ARN || !sameAttrs(d.Attributes, attrs) {
			t.Errorf("described %+v, want %+v", d, th)
		}
		_, err = f.r.DescribeThing(f.ctx, f.name("absent"))
		wantErr(t, "DescribeThing absent", err, fleet.ErrNotFound)
	})
	t.Run("CreateThing with the same attributes is a no-op", func(t *testing.T) {
		again, err := f.r.CreateThing(f.ctx, name, map[string]string{"cert": "abc", "origin": "eu-west-1"})
		wantErr(t, "CreateThing again", err, nil)
		if again.Name != name || again.ARN != th.ARN {
			t.Errorf("second CreateThing returned %+v, want %+v", again, th)
		}
	})
	t.Run("CreateThing with other attributes is ErrAlreadyExists", func(t *testing.T) {
		// CreateThingReplaces: moto replaces the thing instead.
		if f.env.Quirks.CreateThingReplaces {
			t.Skip("backend quirk: CreateThing replaces an existing thing")
		}
		_, err := f.r.CreateThing(f.ctx, name, map[string]string{"origin": "us-west-2"})
		wantErr(t, "CreateThing other attributes", err, fleet.ErrAlreadyExists)
		d, err := f.r.DescribeThing(f.ctx, name)
		wantErr(t, "DescribeThing", err, nil)
		if !sameAttrs(d.Attributes, attrs) {
			t.Errorf("attributes after refused CreateThing %v, want %v", d.Attributes, attrs)
		}
	})
	t.Run("invalid names are ErrInvalid", func(t *testing.T) {
		for _, bad := range []string{"", "has space", "slash/name", strings.Repeat("x", fleet.MaxThingNameLen+1)} {
			_, err := f.r.CreateThing(f.ctx, bad, nil)
			// ThingNamesUnchecked: moto creates things of any non-empty name.
			if bad != "" && f.env.Quirks.ThingNamesUnchecked {
				continue
			}
			wantErr(t, "CreateThing "+bad, err, fleet.ErrInvalid)
		}
	})
	t.Run("UpdateThingAttributes merges", func(t *testing.T) {
		err := f.r.UpdateThingAttributes(f.ctx, name, map[string]string{"status": "ACTIVE", "cert": "def"})
		wantErr(t, "UpdateThingAttributes", err, nil)
		d, err := f.r.DescribeThing(f.ctx, name)
		wantErr(t, "DescribeThing", err, nil)
		want := map[string]string{"origin": "eu-west-1", "cert": "def", "status": "ACTIVE"}
		if !sameAttrs(d.Attributes, want) {
			t.Errorf("attributes %v, want %v", d.Attributes, want)
		}
		err = f.r.UpdateThingAttributes(f.ctx, f.name("absent"), map[string]string{"a": "b"})
		wantErr(t, "UpdateThingAttributes absent", err, fleet.ErrNotFound)
	})
}

func testDeleteThing(t *testing.T, newEnv func(t *testing.T) RegistryEnv) {
	f := newRegistryFixture(t, newEnv)
	t.Run("absent is a success", func(t *testing.T) {
		wantErr(t, "DeleteThing", f.r.DeleteThing(f.ctx, f.name("never")), nil)
	})
	t.Run("with a principal is ErrDeleteConflict, then deletes once detached", func(t *testing.T) {
		name := f.name("delthing")
		f.thing(name, nil)
		c := f.register(name, fleet.CertActive)
		wantErr(t, "AttachThingPrincipal", f.r.AttachThingPrincipal(f.ctx, name, c.ARN), nil)
		// DeleteThingIgnoresPrincipals: the backend deletes anyway.
		if !f.env.Quirks.DeleteThingIgnoresPrincipals {
			wantErr(t, "DeleteThing attached", f.r.DeleteThing(f.ctx, name), fleet.ErrDeleteConflict)
			_, err := f.r.DescribeThing(f.ctx, name)
			wantErr(t, "DescribeThing after refused delete", err, nil)
		}
		wantErr(t, "DetachThingPrincipal", f.r.DetachThingPrincipal(f.ctx, name, c.ARN), nil)
		wantErr(t, "DeleteThing", f.r.DeleteThing(f.ctx, name), nil)
		_, err := f.r.DescribeThing(f.ctx, name)
		wantErr(t, "DescribeThing after delete", err, fleet.ErrNotFound)
		wantErr(t, "DeleteThing again", f.r.DeleteThing(f.ctx, name), nil)
	})
}

func testThingPrincipals(t *testing.T, newEnv func(t *testing.T) RegistryEnv) {
	f := newRegistryFixture(t, newEnv)
	name := f.name("tp")
	f.thing(name, nil)
	c := f.register(name, fleet.CertActive)
	list := func(t *testing.T) []string {
		t.Helper()
		prs, err := f.r.ListThingPrincipals(f.ctx, name)
		wantErr(t, "ListThingPrincipals", err, nil)
		return prs
	}
	t.Run("a new thing has none", func(t *testing.T) {
		if prs := list(t); len(prs) != 0 {
			t.Errorf("principals %v, want none", prs)
		}
	})
	t.Run("attach is idempotent", func(t *testing.T) {
		for range 2 {
			wantErr(t, "AttachThingPrincipal", f.r.AttachThingPrincipal(f.ctx, name, c.ARN), nil)
		}
		if prs := list(t); !slices.Equal(prs, []string{c.ARN}) {
			t.Errorf("principals %v, want [%s]", prs, c.ARN)
		}
	})
	t.Run("unknown thing or principal is ErrNotFound", func(t *testing.T) {
		wantErr(t, "AttachThingPrincipal unknown thing", f.r.AttachThingPrincipal(f.ctx, f.name("absent"), c.ARN), fleet.ErrNotFound)
		wantErr(t, "AttachThingPrincipal unknown principal", f.r.AttachThingPrincipal(f.ctx, name, f.unknownCertARN(c)), fleet.ErrNotFound)
		wantErr(t, "DetachThingPrincipal unknown thing", f.r.DetachThingPrincipal(f.ctx, f.name("absent"), c.ARN), fleet.ErrNotFound)
		_, err := f.r.ListThingPrincipals(f.ctx, f.name("absent"))
		wantErr(t, "ListThingPrincipals unknown thing", err, fleet.ErrNotFound)
	})
	t.Run("detach is idempotent", func(t *testing.T) {
		for i := range 2 {
			err := f.r.DetachThingPrincipal(f.ctx, name, c.ARN)
			// DetachNotAttachedIsNotFound: moto refuses the second detach.
			if i > 0 && f.env.Quirks.DetachNotAttachedIsNotFound && errors.Is(err, fleet.ErrNotFound) {
				continue
			}
			wantErr(t, "DetachThingPrincipal", err, nil)
		}
		if prs := list(t); len(prs) != 0 {
			t.Errorf("principals after detach %v, want none", prs)
		}
	})
}

func testPolicies(t *testing.T, newEnv func(t *testing.T) RegistryEnv) {
	f := newRegistryFixture(t, newEnv)
	pol := f.policy(f.name("pol"))
	c := f.register(f.name("polcert"), fleet.CertActive)
	list := func(t *testing.T) []string {
		t.Helper()
		pols, err := f.r.ListAttachedPolicies(f.ctx, c.ARN)
		wantErr(t, "ListAttachedPolicies", err, nil)
		return pols
	}
	t.Run("none attached", func(t *testing.T) {
		if pols := list(t); len(pols) != 0 {
			t.Errorf("policies %v, want none", pols)
		}
	})
	t.Run("attach is idempotent", func(t *testing.T) {
		for range 2 {
			wantErr(t, "AttachPolicy", f.r.AttachPolicy(f.ctx, pol, c.ARN), nil)
		}
		if pols := list(t); !slices.Equal(pols, []string{pol}) {
			t.Errorf("policies %v, want [%s]", pols, pol)
		}
	})
	t.Run("unknown policy or principal is ErrNotFound", func(t *testing.T) {
		wantErr(t, "AttachPolicy unknown policy", f.r.AttachPolicy(f.ctx, f.name("nopol"), c.ARN), fleet.ErrNotFound)
		wantErr(t, "AttachPolicy unknown principal", f.r.AttachPolicy(f.ctx, pol, f.unknownCertARN(c)), fleet.ErrNotFound)
		wantErr(t, "DetachPolicy unknown policy", f.r.DetachPolicy(f.ctx, f.name("nopol"), c.ARN), fleet.ErrNotFound)
	})
	t.Run("detach is idempotent", func(t *testing.T) {
		for i := range 2 {
			err := f.r.DetachPolicy(f.ctx, pol, c.ARN)
			// DetachNotAttachedIsNotFound: moto refuses the second detach.
			if i > 0 && f.env.Quirks.DetachNotAttachedIsNotFound && errors.Is(err, fleet.ErrNotFound) {
				continue
			}
			wantErr(t, "DetachPolicy", err, nil)
		}
		if pols := list(t); len(pols) != 0 {
			t.Errorf("policies after detach %v, want none", pols)
		}
	})
}

// maxPages stops a listing whose cursor never ends.
const maxPages = 1000

// pageThrough follows a listing's cursor from the start to the end and
// returns its pages.
func pageThrough[T any](t *testing.T, what string, list func(cursor string) ([]T, string, error)) [][]T {
	t.Helper()
	var pages [][]T
	cursor := ""
	for {
		page, next, err := list(cursor)
		wantErr(t, fmt.Sprintf("%s page %d", what, len(pages)+1), err, nil)
		pages = append(pages, page)
		if next == "" {
			return pages
		}
		if len(pages) == maxPages {
			t.Fatalf("%s: no end after %d pages", what, maxPages)
		}
		cursor = next
	}
}

// wantPageSizes checks that no page holds more than limit items and that
// there are at least the pages n items need.
func wantPageSizes[T any](t *testing.T, what string, pages [][]T, limit, n int) {
	t.Helper()
	for i, p := range pages {
		if len(p) > limit {
			t.Errorf("%s: page %d holds %d items, limit %d", what, i+1, len(p), limit)
		}
	}
	if need := (n + limit - 1) / limit; len(pages) < need {
		t.Errorf("%s: %d pages for %d items of at most %d a page, want at least %d", what, len(pages), n, limit, need)
	}
}

func testListThings(t *testing.T, newEnv func(t *testing.T) RegistryEnv) {
	f := newRegistryFixture(t, newEnv)
	// The filter's value belongs to this run: a shared backend holds other
	// things.
	batch := f.name("batch")
	want := map[string]map[string]string{} // name -> attributes
	for i := range 5 {
		name := f.name("lt-" + strconv.Itoa(i))
		attrs := map[string]string{"batch": batch, "n": strconv.Itoa(i)}
		f.thing(name, attrs)
		want[name] = attrs
	}
	// A longer value (the match is exact, not a prefix) and no attribute.
	others := map[string]map[string]string{
		f.name("lt-longer"): {"batch": batch + "-x"},
		f.name("lt-bare"):   nil,
	}
	for name, attrs := range others {
		f.thing(name, attrs)
	}
	listAll := func(t *testing.T, name, value string, limit int) ([][]fleet.Thing, map[string]fleet.Thing) {
		t.Helper()
		pages := pageThrough(t, "ListThings", func(cursor string) ([]fleet.Thing, string, error) {
			return f.r.ListThings(f.ctx, name, value, limit, cursor)
		})
		seen := map[string]fleet.Thing{}
		for _, page := range pages {
			for _, th := range page {
				if _, dup := seen[th.Name]; dup {
					t.Errorf("thing %s listed twice", th.Name)
				}
				seen[th.Name] = th
			}
		}
		return pages, seen
	}

	t.Run("the filter pages through with a small limit", func(t *testing.T) {
		pages, seen := listAll(t, "batch", batch, 2)
		wantPageSizes(t, "ListThings", pages, 2, len(want))
		if len(seen) != len(want) {
			t.Errorf("listed %d things, want the %d of the batch", len(seen), len(want))
		}
		for name, attrs := range want {
			th, ok := seen[name]
			if !ok {
				t.Errorf("thing %s not listed", name)
				continue
			}
			if !strings.HasSuffix(th.ARN, ":thing/"+name) || !sameAttrs(th.Attributes, attrs) {
				t.Errorf("listed %+v, want ARN ...:thing/%s and attributes %v", th, name, attrs)
			}
		}
	})
	t.Run("the last page has no cursor", func(t *testing.T) {
		things, next, err := f.r.ListThings(f.ctx, "batch", batch, contract.MaxListLimit, "")
		wantErr(t, "ListThings", err, nil)
		if len(things) != len(want) || next != "" {
			t.Errorf("one page of %d: %d things, cursor %q; want %d and no cursor", contract.MaxListLimit, len(things), next, len(want))
		}
	})
	t.Run("no filter lists every thing", func(t *testing.T) {
		_, seen := listAll(t, "", "", contract.MaxListLimit)
		for name := range want {
			if _, ok := seen[name]; !ok {
				t.Errorf("thing %s not listed", name)
			}
		}
		for name := range others {
			if _, ok := seen[name]; !ok {
				t.Errorf("thing %s not listed", name)
			}
		}
	})
	t.Run("no match is an empty page without cursor", func(t *testing.T) {
		things, next, err := f.r.ListThings(f.ctx, "batch", f.name("nobody"), 10, "")
		wantErr(t, "ListThings", err, nil)
		if len(things) != 0 || next != "" {
			t.Errorf("ListThings = %+v, %q; want nothing", things, next)
		}
	})
	t.Run("refusals", func(t *testing.T) {
		tests := []struct {
			name        string
			attr, value string
			limit       int
		}{
			{"limit 0", "", "", 0},
			{"negative limit", "", "", -1},
			{"limit over 250", "", "", contract.MaxListLimit + 1},
			{"attribute name without value", "batch", "", 10},
			{"attribute value without name", "", batch, 10},
		}
		for _, tt := range tests {
			_, _, err := f.r.ListThings(f.ctx, tt.attr, tt.value, tt.limit, "")
			wantErr(t, "ListThings "+tt.name, err, fleet.ErrInvalid)
		}
	})
}

func testListCACertificates(t *testing.T, newEnv func(t *testing.T) RegistryEnv) {
	f := newRegistryFixture(t, newEnv)
	// ListCACertificatesUnimplemented: moto has no such action.
	if f.env.Quirks.ListCACertificatesUnimplemented {
		t.Skip("backend quirk: ListCACertificates is not implemented")
	}
	other, err := pki.NewRoot("second contract root", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	otherID := f.env.RegisterCA(t, other.CertPEM())
	cas, err := f.r.ListCACertificates(f.ctx)
	wantErr(t, "ListCACertificates", err, nil)
	listed := map[string]fleet.CACertificate{}
	for _, ca := range cas {
		if _, dup := listed[ca.ID]; dup {
			t.Errorf("CA %s listed twice", ca.ID)
		}
		listed[ca.ID] = ca
	}
	for _, id := range []string{f.caID, otherID} {
		ca, ok := listed[id]
		if !ok {
			t.Errorf("CA %s not listed", id)
			continue
		}
		wantARN := ":cacert/" + id
		if f.env.Quirks.CACertificateARNIsCert { // moto's CA ARN ends in :cert/<id>
			wantARN = ":cert/" + id
		}
		if !strings.HasSuffix(ca.ARN, wantARN) || ca.Status != fleet.CertActive {
			t.Errorf("listed %+v, want ARN ...%s, ACTIVE", ca, wantARN)
		}
		// AWS's list carries neither: DescribeCACertificate has them.
		if ca.PEM != "" || ca.AutoRegistration {
			t.Errorf("listed CA %s with a PEM or auto-registration, which AWS does not list", id)
		}
	}
}

func testListCertificatesByCA(t *testing.T, newEnv func(t *testing.T) RegistryEnv) {
	f := newRegistryFixture(t, newEnv)
	registering := time.Now()
	want := map[string]fleet.Certificate{}
	for i, st := range []fleet.CertStatus{fleet.CertActive, fleet.CertInactive, fleet.CertRevoked, fleet.CertActive, fleet.CertInactive} {
		c := f.register(f.name("bca-"+strconv.Itoa(i)), st)
		want[c.ID] = c
	}
	// A certificate of another registered CA is not listed.
	otherRoot, err := pki.NewRoot("other contract root", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f.env.RegisterCA(t, otherRoot.CertPEM())
	stranger, err := otherRoot.IssueDevice(f.name("bca-stranger"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.r.RegisterCertificate(f.ctx, stranger.CertPEM(), fleet.CertActive)
	wantErr(t, "RegisterCertificate of the other CA", err, nil)

	t.Run("pages through with a small limit", func(t *testing.T) {
		// CertificatesByCAUnlinked: moto lists none of them.
		if f.env.Quirks.CertificatesByCAUnlinked {
			t.Skip("backend quirk: certificates registered without the CA's PEM are not linked to their CA")
		}
		pages := pageThrough(t, "ListCertificatesByCA", func(cursor string) ([]fleet.Certificate, string, error) {
			return f.r.ListCertificatesByCA(f.ctx, f.caID, 2, cursor)
		})
		// CertificatesByCAUnpaged: moto answers everything in one page.
		if !f.env.Quirks.CertificatesByCAUnpaged {
			wantPageSizes(t, "ListCertificatesByCA", pages, 2, len(want))
		}
		seen := map[string]bool{}
		for _, c := range slices.Concat(pages...) {
			w, ok := want[c.ID]
			switch {
			case !ok:
				t.Errorf("certificate %s is not one of the CA's", c.ID)
				continue
			case seen[c.ID]:
				t.Errorf("certificate %s listed twice", c.ID)
			}
			seen[c.ID] = true
			if c.ARN != w.ARN || c.Status != w.Status || c.CACertificateID != f.caID || c.PEM != "" {
				t.Errorf("listed %+v, want ARN %s, status %s, CA %s, no PEM", c, w.ARN, w.Status, f.caID)
			}
			wantCreatedAt(t, "ListCertificatesByCA "+c.ID[:8], c.CreatedAt, registering)
		}
		if len(seen) != len(want) {
			t.Errorf("listed %d of the CA's %d certificates", len(seen), len(want))
		}
	})
	t.Run("the last page has no cursor", func(t *testing.T) {
		certs, next, err := f.r.ListCertificatesByCA(f.ctx, f.caID, contract.MaxListLimit, "")
		wantErr(t, "ListCertificatesByCA", err, nil)
		// CertificatesByCAUnlinked: moto lists none of them.
		if !f.env.Quirks.CertificatesByCAUnlinked && len(certs) != len(want) {
			t.Errorf("one page of %d: %d certificates, want %d", contract.MaxListLimit, len(certs), len(want))
		}
		if next != "" {
			t.Errorf("cursor %q after the last page", next)
		}
	})
	t.Run("a CA that is not registered lists nothing", func(t *testing.T) {
		nobody, err := pki.NewRoot("unregistered contract root", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		certs, next, err := f.r.ListCertificatesByCA(f.ctx, fleet.CertificateID(nobody.Cert), 10, "")
		wantErr(t, "ListCertificatesByCA", err, nil)
		if len(certs) != 0 || next != "" {
			t.Errorf("ListCertificatesByCA = %+v, %q; want nothing", certs, next)
		}
	})
	t.Run("refusals", func(t *testing.T) {
		for _, limit := range []int{0, -1, contract.MaxListLimit + 1} {
			_, _, err := f.r.ListCertificatesByCA(f.ctx, f.caID, limit, "")
			wantErr(t, fmt.Sprintf("ListCertificatesByCA limit %d", limit), err, fleet.ErrInvalid)
		}
		_, _, err := f.r.ListCertificatesByCA(f.ctx, "", 10, "")
		wantErr(t, "ListCertificatesByCA of an empty CA id", err, fleet.ErrInvalid)
	})
}
