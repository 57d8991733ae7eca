// Package memiot is one region's AWS IoT registry held in memory: device and
// CA certificates, things, policies and their attachments, with AWS IoT's
// documented semantics and error cases mapped onto the fleet sentinels. It
// serves the workflow tests (with fault, latency and quota injection) and the
// local multi-region stack, where it is the registry of a region.
//
// A Registry is safe for concurrent use.
package memiot

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mriot/mriot/internal/core/contract"
	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/fake/journal"
)

// Registry is one region's IoT registry.
type Registry struct {
	region, account string
	f               faults

	mu       sync.RWMutex
	certs    map[string]*certRec // by id
	cas      map[string]*caRec   // by id
	things   map[string]fleet.Thing
	policies map[string]string              // name -> document
	thingPr  map[string]map[string]struct{} // thing -> principal ARNs
	prPol    map[string]map[string]struct{} // principal ARN -> policy names

	watch watchers    // OnCertificateChange
	jr    *regJournal // nil until Restore: memory only
}

type certRec struct {
	c    fleet.Certificate // c.CreatedAt is the registration's creationDate
	x509 *x509.Certificate
}

type caRec struct {
	c    fleet.CACertificate
	x509 *x509.Certificate
}

// New returns an empty registry of region in account accountID.
func New(region, accountID string, opts ...Option) *Registry {
	r := &Registry{
		region: region, account: accountID,
		certs:    map[string]*certRec{},
		cas:      map[string]*caRec{},
		things:   map[string]fleet.Thing{},
		policies: map[string]string{},
		thingPr:  map[string]map[string]struct{}{},
		prPol:    map[string]map[string]struct{}{},
	}
	r.f.now = time.Now
	for _, o := range opts {
		o(&r.f)
	}
	return r
}

// Region returns the registry's region.
func (r *Registry) Region() string { return r.region }

// AccountID returns the registry's account.
func (r *Registry) AccountID() string { return r.account }

func (r *Registry) arn(kind, name string) string {
	return "arn:aws:iot:" + r.region + ":" + r.account + ":" + kind + "/" + name
}

// CertificateARN is the ARN of the certificate id in this registry.
func (r *Registry) CertificateARN(id string) string { return r.arn("cert", id) }

// ThingARN is the ARN of the thing name in this registry.
func (r *Registry) ThingARN(name string) string { return r.arn("thing", name) }

// CACertificateARN is the ARN of the CA certificate id in this registry.
func (r *Registry) CACertificateARN(id string) string { return r.arn("cacert", id) }

// PolicyARN is the ARN of the policy name in this registry.
func (r *Registry) PolicyARN(name string) string { return r.arn("policy", name) }

// certIDFromARN returns the certificate id of a certificate ARN of this
// registry. A string that is no IoT certificate ARN is ErrInvalid; the ARN of
// another region or account, or of an unknown certificate, is ErrNotFound.
// The caller holds r.mu.
func (r *Registry) certFromARN(op, principal string) (*certRec, error) {
	parts := strings.SplitN(principal, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" || parts[2] != "iot" || !strings.HasPrefix(parts[5], "cert/") {
		return nil, fmt.Errorf("%s: principal %q is not an IoT certificate ARN: %w", op, principal, fleet.ErrInvalid)
	}
	if parts[3] != r.region || parts[4] != r.account {
		return nil, fmt.Errorf("%s: principal %s is not in %s/%s: %w", op, principal, r.account, r.region, fleet.ErrNotFound)
	}
	id := strings.TrimPrefix(parts[5], "cert/")
	rec := r.certs[id]
	if rec == nil {
		return nil, fmt.Errorf("%s: certificate %s: %w", op, id, fleet.ErrNotFound)
	}
	return rec, nil
}

func validCertID(id string) bool {
	if len(id) != 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func knownStatus(s fleet.CertStatus) bool {
	switch s {
	case fleet.CertActive, fleet.CertInactive, fleet.CertRevoked, fleet.CertPendingActivation,
		fleet.CertPendingTransfer, fleet.CertRegisterInactive:
		return true
	}
	return false
}

// DescribeCertificate implements contract.Registry.
func (r *Registry) DescribeCertificate(ctx context.Context, id string) (fleet.Certificate, error) {
	const op = "DescribeCertificate"
	if err := r.f.before(ctx, op); err != nil {
		return fleet.Certificate{}, err
	}
	if !validCertID(id) {
		return fleet.Certificate{}, fmt.Errorf("%s: certificate id %q is not 64 hex digits: %w", op, id, fleet.ErrInvalid)
	}
	// Copied under the lock: UpdateCertificate changes rec.c.
	r.mu.RLock()
	rec := r.certs[id]
	var c fleet.Certificate
	if rec != nil {
		c = rec.c
	}
	r.mu.RUnlock()
	if rec == nil {
		return fleet.Certificate{}, fmt.Errorf("%s: certificate %s: %w", op, id, fleet.ErrNotFound)
	}
	r.f.afterHook(ctx, op)
	return c, nil
}

// DescribeCACertificate implements contract.Registry.
func (r *Registry) DescribeCACertificate(ctx context.Context, id string) (fleet.CACertificate, error) {
	const op = "DescribeCACertificate"
	if err := r.f.before(ctx, op); err != nil {
		return fleet.CACertificate{}, err
	}
	if !validCertID(id) {
		return fleet.CACertificate{}, fmt.Errorf("%s: CA certificate id %q is not 64 hex digits: %w", op, id, fleet.ErrInvalid)
	}
	// Copied under the lock: SetCAStatus changes rec.c.
	r.mu.RLock()
	rec := r.cas[id]
	var ca fleet.CACertificate
	if rec != nil {
		ca = rec.c
	}
	r.mu.RUnlock()
	if rec == nil {
		return fleet.CACertificate{}, fmt.Errorf("%s: CA certificate %s: %w", op, id, fleet.ErrNotFound)
	}
	r.f.afterHook(ctx, op)
	return ca, nil
}

// issuer returns the registered CA whose key signed cert, preferring an
// ACTIVE one when several CAs share the key (SNI_ONLY mode allows several CAs
// with the same subject). The caller holds r.mu.
func (r *Registry) issuer(cert *x509.Certificate) *caRec {
	var found *caRec
	for _, ca := range r.cas {
		if cert.CheckSignatureFrom(ca.x509) != nil {
			continue
		}
		if found == nil || (found.c.Status != fleet.CertActive && ca.c.Status == fleet.CertActive) ||
			(found.c.Status == ca.c.Status && ca.c.ID < found.c.ID) {
			found = ca
		}
	}
	return found
}

// RegisterCertificate implements contract.Registry. The certificate must be
// signed by a CA registered and ACTIVE in this region and be within its
// validity period (AWS's CertificateValidityException); both refusals wrap
// ErrInvalid. An empty status registers it INACTIVE, AWS's default.
func (r *Registry) RegisterCertificate(ctx context.Context, pemText string, status fleet.CertStatus) (fleet.Certificate, error) {
	const op = "RegisterCertificate"
	if err := r.f.before(ctx, op); err != nil {
		return fleet.Certificate{}, err
	}
	if status == "" {
		status = fleet.CertInactive
	}
	if !knownStatus(status) {
		return fleet.Certificate{}, fmt.Errorf("%s: status %q: %w", op, status, fleet.ErrInvalid)
	}
	cert, err := fleet.ParseCertificatePEM(pemText)
	if err != nil {
		return fleet.Certificate{}, fmt.Errorf("%s: %w", op, err)
	}
	if now := r.f.now(); now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
		return fleet.Certificate{}, fmt.Errorf("%s: CertificateValidityException: certificate is outside its validity period: %w", op, fleet.ErrInvalid)
	}
	c, _, err := r.register(op, cert, status, false)
	if err != nil {
		return fleet.Certificate{}, err
	}
	r.certificateChanged(c.ID, c.Status)
	r.f.afterHook(ctx, op)
	return c, nil
}

// register stores cert signed by a registered CA. With auto, the CA must have
// auto-registration enabled, and an existing certificate is returned as it is.
func (r *Registry) register(op string, cert *x509.Certificate, status fleet.CertStatus, auto bool) (fleet.Certificate, bool, error) {
	c, created, wait, err := r.registerLocked(op, cert, status, auto)
	if err != nil {
		return fleet.Certificate{}, false, err
	}
	if err := kept(op, wait); err != nil {
		return fleet.Certificate{}, false, err
	}
	return c, created, nil
}

// registerLocked is register under r.mu, and the wait of its journal group.
func (r *Registry) registerLocked(op string, cert *x509.Certificate, status fleet.CertStatus, auto bool) (_ fleet.Certificate, _ bool, wait func() error, _ error) {
	id := fleet.CertificateID(cert)
	r.mu.Lock()
	defer func() { wait = r.unlock() }()
	if rec := r.certs[id]; rec != nil {
		if auto {
			return rec.c, false, nil, nil
		}
		return fleet.Certificate{}, false, nil, fmt.Errorf("%s: ResourceAlreadyExistsException: certificate %s: %w", op, id, fleet.ErrAlreadyExists)
	}
	if r.cas[id] != nil {
		return fleet.Certificate{}, false, nil, fmt.Errorf("%s: certificate %s is a registered CA certificate: %w", op, id, fleet.ErrInvalid)
	}
	ca := r.issuer(cert)
	switch {
	case ca == nil:
		return fleet.Certificate{}, false, nil, fmt.Errorf("%s: certificate %s: CA not registered: %w", op, id, fleet.ErrInvalid)
	case ca.c.Status != fleet.CertActive:
		return fleet.Certificate{}, false, nil, fmt.Errorf("%s: certificate %s: CA %s is %s: %w", op, id, ca.c.ID, ca.c.Status, fleet.ErrInvalid)
	case auto && !ca.c.AutoRegistration:
		return fleet.Certificate{}, false, nil, fmt.Errorf("%s: certificate %s: CA %s has auto-registration disabled: %w", op, id, ca.c.ID, fleet.ErrInvalid)
	}
	c := fleet.Certificate{
		ID: id, ARN: r.arn("cert", id), PEM: fleet.EncodePEM(cert),
		CACertificateID: ca.c.ID, Status: status, CreatedAt: r.f.now(),
	}
	rec := &certRec{c: c, x509: cert}
	r.certs[id] = rec
	r.noteCert(rec)
	return c, true, nil, nil
}

// UpdateCertificate implements contract.Registry. A REVOKED certificate
// cannot change status (AWS's CertificateStateException), and
// PENDING_TRANSFER and PENDING_ACTIVATION cannot be set (AWS throws for
// them): both wrap ErrInvalid.
func (r *Registry) UpdateCertificate(ctx context.Context, id string, status fleet.CertStatus) error {
	const op = "UpdateCertificate"
	if err := r.f.before(ctx, op); err != nil {
		return err
	}
	if !validCertID(id) {
		return fmt.Errorf("%s: certificate id %q is not 64 hex digits: %w", op, id, fleet.ErrInvalid)
	}
	if !knownStatus(status) {
		return fmt.Errorf("%s: status %q: %w", op, status, fleet.ErrInvalid)
	}
	r.mu.Lock()
	rec := r.certs[id]
	var err error
	changed := false
	switch {
	case rec == nil:
		err = fmt.Errorf("%s: certificate %s: %w", op, id, fleet.ErrNotFound)
	case rec.c.Status == status:
	case rec.c.Status == fleet.CertRevoked:
		err = fmt.Errorf("%s: CertificateStateException: certificate %s is REVOKED and cannot become %s: %w", op, id, status, fleet.ErrInvalid)
	case status == fleet.CertPendingTransfer || status == fleet.CertPendingActivation:
		err = fmt.Errorf("%s: status %s cannot be set: %w", op, status, fleet.ErrInvalid)
	default:
		rec.c.Status = status
		changed = true
		r.noteCert(rec)
	}
	wait := r.unlock()
	if err != nil {
		return err
	}
	// The registry has changed whatever the journal says: its watchers
	// (the endpoint's sessions) hear of it either way.
	if changed {
		r.certificateChanged(id, status)
	}
	if err := kept(op, wait); err != nil {
		return err
	}
	r.f.afterHook(ctx, op)
	return nil
}

// DeleteCertificate implements contract.Registry.
func (r *Registry) DeleteCertificate(ctx context.Context, id string) error {
	const op = "DeleteCertificate"
	if err := r.f.before(ctx, op); err != nil {
		return err
	}
	if !validCertID(id) {
		return fmt.Errorf("%s: certificate id %q is not 64 hex digits: %w", op, id, fleet.ErrInvalid)
	}
	r.mu.Lock()
	rec := r.certs[id]
	var err error
	switch {
	case rec == nil:
		err = fmt.Errorf("%s: certificate %s: %w", op, id, fleet.ErrNotFound)
	case rec.c.Status == fleet.CertActive:
		err = fmt.Errorf("%s: CertificateStateException: certificate %s is ACTIVE: %w", op, id, fleet.ErrDeleteConflict)
	case len(r.prPol[rec.c.ARN]) > 0:
		err = fmt.Errorf("%s: DeleteConflictException: certificate %s has policies attached: %w", op, id, fleet.ErrDeleteConflict)
	case r.attachedToThing(rec.c.ARN):
		err = fmt.Errorf("%s: DeleteConflictException: certificate %s is attached to a thing: %w", op, id, fleet.ErrDeleteConflict)
	default:
		delete(r.certs, id)
		delete(r.prPol, rec.c.ARN)
		r.note(journal.Delete(r.jr.certs(), []byte(id)))
	}
	wait := r.unlock()
	if err != nil {
		return err
	}
	r.certificateChanged(id, CertificateDeleted)
	if err := kept(op, wait); err != nil {
		return err
	}
	r.f.afterHook(ctx, op)
	return nil
}

// attachedToThing: the caller holds r.mu.
func (r *Registry) attachedToThing(principal string) bool {
	for _, prs := range r.thingPr {
		if _, ok := prs[principal]; ok {
			return true
		}
	}
	return false
}

// DescribeThing implements contract.Registry.
func (r *Registry) DescribeThing(ctx context.Context, name string) (fleet.Thing, error) {
	const op = "DescribeThing"
	if err := r.f.before(ctx, op); err != nil {
		return fleet.Thing{}, err
	}
	if err := fleet.ValidateThingName(name); err != nil {
		return fleet.Thing{}, fmt.Errorf("%s: %w", op, err)
	}
	r.mu.RLock()
	th, ok := r.things[name]
	if ok {
		th = copyThing(th)
	}
	r.mu.RUnlock()
	if !ok {
		return fleet.Thing{}, fmt.Errorf("%s: thing %s: %w", op, name, fleet.ErrNotFound)
	}
	r.f.afterHook(ctx, op)
	return th, nil
}

func copyThing(th fleet.Thing) fleet.Thing {
	th.Attributes = maps.Clone(th.Attributes)
	if th.Attributes == nil {
		th.Attributes = map[string]string{}
	}
	return th
}

func sameAttrs(a, b map[string]string) bool {
	return len(a) == len(b) && maps.Equal(a, b)
}

// CreateThing implements contract.Registry.
func (r *Registry) CreateThing(ctx context.Context, name string, attrs map[string]string) (fleet.Thing, error) {
	const op = "CreateThing"
	if err := r.f.before(ctx, op); err != nil {
		return fleet.Thing{}, err
	}
	if err := fleet.ValidateThingName(name); err != nil {
		return fleet.Thing{}, fmt.Errorf("%s: %w", op, err)
	}
	r.mu.Lock()
	th, ok := r.things[name]
	var err error
	switch {
	case ok && sameAttrs(th.Attributes, attrs):
		th = copyThing(th)
	case ok:
		err = fmt.Errorf("%s: ResourceAlreadyExistsException: thing %s exists with other attributes: %w", op, name, fleet.ErrAlreadyExists)
	default:
		th = fleet.Thing{Name: name, ARN: r.arn("thing", name), Attributes: maps.Clone(attrs)}
		if th.Attributes == nil {
			th.Attributes = map[string]string{}
		}
		r.things[name] = th
		r.noteThing(th)
		th = copyThing(th)
	}
	wait := r.unlock()
	if err != nil {
		return fleet.Thing{}, err
	}
	if err := kept(op, wait); err != nil {
		return fleet.Thing{}, err
	}
	r.f.afterHook(ctx, op)
	return th, nil
}

// UpdateThingAttributes implements contract.Registry (AWS UpdateThing with
// merge). As in AWS, an attribute given an empty value is removed.
func (r *Registry) UpdateThingAttributes(ctx context.Context, name string, attrs map[string]string) error {
	const op = "UpdateThing"
	if err := r.f.before(ctx, op); err != nil {
		return err
	}
	if err := fleet.ValidateThingName(name); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	r.mu.Lock()
	th, ok := r.things[name]
	if ok {
		merged := maps.Clone(th.Attributes)
		for k, v := range attrs {
			if v == "" {
				delete(merged, k)
			} else {
				merged[k] = v
			}
		}
		th.Attributes = merged
		r.things[name] = th
		r.noteThing(th)
	}
	wait := r.unlock()
	if !ok {
		return fmt.Errorf("%s: thing %s: %w", op, name, fleet.ErrNotFound)
	}
	if err := kept(op, wait); err != nil {
		return err
	}
	r.f.afterHook(ctx, op)
	return nil
}

// DeleteThing implements contract.Registry.
func (r *Registry) DeleteThing(ctx context.Context, name string) error {
	const op = "DeleteThing"
	if err := r.f.before(ctx, op); err != nil {
		return err
	}
	if err := fleet.ValidateThingName(name); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	r.mu.Lock()
	var err error
	if len(r.thingPr[name]) > 0 {
		err = fmt.Errorf("%s: thing %s has principals attached: %w", op, name, fleet.ErrDeleteConflict)
	} else if _, ok := r.things[name]; ok {
		delete(r.things, name)
		delete(r.thingPr, name)
		r.note(journal.Delete(r.jr.things(), []byte(name)))
	}
	wait := r.unlock()
	if err != nil {
		return err
	}
	if err := kept(op, wait); err != nil {
		return err
	}
	r.f.afterHook(ctx, op)
	return nil
}

// AttachThingPrincipal implements contract.Registry.
func (r *Registry) AttachThingPrincipal(ctx context.Context, thing, principalARN string) error {
	return r.write(ctx, "AttachThingPrincipal", func(op string) error {
		if err := r.thingAndCert(op, thing, principalARN); err != nil {
			return err
		}
		addPair(r.thingPr, thing, principalARN)
		r.note(journal.Put(r.jr.thingPrincipals(), pairKey(thing, principalARN), nil))
		return nil
	})
}

// DetachThingPrincipal implements contract.Registry. An unknown thing or
// certificate is ErrNotFound; a known certificate that is not attached is a
// success.
func (r *Registry) DetachThingPrincipal(ctx context.Context, thing, principalARN string) error {
	return r.write(ctx, "DetachThingPrincipal", func(op string) error {
		if err := r.thingAndCert(op, thing, principalARN); err != nil {
			return err
		}
		removePair(r.thingPr, thing, principalARN)
		r.note(journal.Delete(r.jr.thingPrincipals(), pairKey(thing, principalARN)))
		return nil
	})
}

// thingAndCert checks, under the lock, that thing and the certificate of
// principalARN exist.
func (r *Registry) thingAndCert(op, thing, principalARN string) error {
	if err := fleet.ValidateThingName(thing); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if _, ok := r.things[thing]; !ok {
		return fmt.Errorf("%s: thing %s: %w", op, thing, fleet.ErrNotFound)
	}
	_, err := r.certFromARN(op, principalARN)
	return err
}

// write runs one mutating API call: the fault hook, fn under the lock, and
// the after-call hook once it succeeded.
func (r *Registry) write(ctx context.Context, op string, fn func(op string) error) error {
	if err := r.f.before(ctx, op); err != nil {
		return err
	}
	r.mu.Lock()
	err := fn(op)
	wait := r.unlock()
	if err != nil {
		return err
	}
	if err := kept(op, wait); err != nil {
		return err
	}
	r.f.afterHook(ctx, op)
	return nil
}

// addPair and removePair maintain a set-valued map (attachments).
func addPair(m map[string]map[string]struct{}, k, v string) {
	if m[k] == nil {
		m[k] = map[string]struct{}{}
	}
	m[k][v] = struct{}{}
}

func removePair(m map[string]map[string]struct{}, k, v string) {
	delete(m[k], v)
	if len(m[k]) == 0 {
		delete(m, k)
	}
}

// ListThingPrincipals implements contract.Registry. The ARNs are sorted.
func (r *Registry) ListThingPrincipals(ctx context.Context, thing string) ([]string, error) {
	const op = "ListThingPrincipals"
	if err := r.f.before(ctx, op); err != nil {
		return nil, err
	}
	if err := fleet.ValidateThingName(thing); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	r.mu.RLock()
	_, ok := r.things[thing]
	prs := slices.Sorted(maps.Keys(r.thingPr[thing]))
	r.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%s: thing %s: %w", op, thing, fleet.ErrNotFound)
	}
	r.f.afterHook(ctx, op)
	if prs == nil {
		prs = []string{}
	}
	return prs, nil
}

// AttachPolicy implements contract.Registry.
func (r *Registry) AttachPolicy(ctx context.Context, policy, principalARN string) error {
	return r.write(ctx, "AttachPolicy", func(op string) error {
		if err := r.policyAndCert(op, policy, principalARN); err != nil {
			return err
		}
		addPair(r.prPol, principalARN, policy)
		r.note(journal.Put(r.jr.principalPolicies(), pairKey(principalARN, policy), nil))
		return nil
	})
}

// DetachPolicy implements contract.Registry. An unknown policy or certificate
// is ErrNotFound; a known pair that is not attached is a success.
func (r *Registry) DetachPolicy(ctx context.Context, policy, principalARN string) error {
	return r.write(ctx, "DetachPolicy", func(op string) error {
		if err := r.policyAndCert(op, policy, principalARN); err != nil {
			return err
		}
		removePair(r.prPol, principalARN, policy)
		r.note(journal.Delete(r.jr.principalPolicies(), pairKey(principalARN, policy)))
		return nil
	})
}

// policyAndCert checks, under the lock, that policy and the certificate of
// principalARN exist.
func (r *Registry) policyAndCert(op, policy, principalARN string) error {
	if err := fleet.ValidatePolicyName(policy); err != nil {
		return fmt.Errorf("%s: policy name: %w", op, err)
	}
	if _, ok := r.policies[policy]; !ok {
		return fmt.Errorf("%s: policy %s: %w", op, policy, fleet.ErrNotFound)
	}
	_, err := r.certFromARN(op, principalARN)
	return err
}

// ListAttachedPolicies implements contract.Registry. The names are sorted.
// An unknown certificate is ErrNotFound.
func (r *Registry) ListAttachedPolicies(ctx context.Context, principalARN string) ([]string, error) {
	const op = "ListAttachedPolicies"
	if err := r.f.before(ctx, op); err != nil {
		return nil, err
	}
	r.mu.RLock()
	_, err := r.certFromARN(op, principalARN)
	pols := slices.Sorted(maps.Keys(r.prPol[principalARN]))
	r.mu.RUnlock()
	if err != nil {
		return nil, err
	}
	r.f.afterHook(ctx, op)
	if pols == nil {
		pols = []string{}
	}
	return pols, nil
}

// checkLimit refuses a page size outside AWS's 1 to 250 (maxResults,
// pageSize), as AWS's request validation does.
func checkLimit(op string, limit int) error {
	if limit < 1 || limit > contract.MaxListLimit {
		return fmt.Errorf("%s: InvalidRequestException: limit %d is not within 1 to %d: %w", op, limit, contract.MaxListLimit, fleet.ErrInvalid)
	}
	return nil
}

// ListThings implements contract.Registry. The things come by name; the
// cursor is the name of the last thing returned, so a page goes on after it
// even when that thing was deleted in between.
func (r *Registry) ListThings(ctx context.Context, attrName, attrValue string, limit int, cursor string) ([]fleet.Thing, string, error) {
	const op = "ListThings"
	if err := r.f.before(ctx, op); err != nil {
		return nil, "", err
	}
	if err := checkLimit(op, limit); err != nil {
		return nil, "", err
	}
	if (attrName == "") != (attrValue == "") {
		return nil, "", fmt.Errorf("%s: attribute name %q and value %q: give both or neither: %w", op, attrName, attrValue, fleet.ErrInvalid)
	}
	match := func(th fleet.Thing) bool {
		v, ok := th.Attributes[attrName]
		return attrName == "" || ok && v == attrValue
	}
	r.mu.RLock()
	names := slices.Sorted(maps.Keys(r.things))
	// The first name after the cursor.
	i, found := slices.BinarySearch(names, cursor)
	if found {
		i++
	}
	out := []fleet.Thing{}
	next := ""
	for ; i < len(names); i++ {
		th := r.things[names[i]]
		if !match(th) {
			continue
		}
		if len(out) == limit {
			// Another match remains: the page ends with a cursor.
			next = out[len(out)-1].Name
			break
		}
		out = append(out, copyThing(th))
	}
	r.mu.RUnlock()
	r.f.afterHook(ctx, op)
	return out, next, nil
}

// ListCACertificates implements contract.Registry: every CA, by id, with id,
// ARN and status only, as AWS lists them.
func (r *Registry) ListCACertificates(ctx context.Context) ([]fleet.CACertificate, error) {
	const op = "ListCACertificates"
	if err := r.f.before(ctx, op); err != nil {
		return nil, err
	}
	r.mu.RLock()
	out := make([]fleet.CACertificate, 0, len(r.cas))
	for _, id := range slices.Sorted(maps.Keys(r.cas)) {
		c := r.cas[id].c
		out = append(out, fleet.CACertificate{ID: c.ID, ARN: c.ARN, Status: c.Status})
	}
	r.mu.RUnlock()
	r.f.afterHook(ctx, op)
	return out, nil
}

// ListCertificatesByCA implements contract.Registry. The certificates come by
// id; the cursor is the id of the last one returned. A CA that is not
// registered lists nothing, as in AWS, whose API reference lists no
// ResourceNotFoundException for the operation.
func (r *Registry) ListCertificatesByCA(ctx context.Context, caID string, limit int, cursor string) ([]fleet.Certificate, string, error) {
	const op = "ListCertificatesByCA"
	if err := r.f.before(ctx, op); err != nil {
		return nil, "", err
	}
	if !validCertID(caID) {
		return nil, "", fmt.Errorf("%s: CA certificate id %q is not 64 hex digits: %w", op, caID, fleet.ErrInvalid)
	}
	if err := checkLimit(op, limit); err != nil {
		return nil, "", err
	}
	r.mu.RLock()
	var ids []string
	for id, rec := range r.certs {
		if rec.c.CACertificateID == caID && id > cursor {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	next := ""
	if len(ids) > limit {
		ids = ids[:limit]
		next = ids[limit-1]
	}
	out := make([]fleet.Certificate, 0, len(ids))
	for _, id := range ids {
		c := r.certs[id].c
		c.PEM = "" // AWS's list carries no PEM
		out = append(out, c)
	}
	r.mu.RUnlock()
	r.f.afterHook(ctx, op)
	return out, next, nil
}

// RegisterCACertificate registers a CA certificate, ACTIVE, in SNI_ONLY mode:
// several CAs may share a subject; the same certificate twice is
// ErrAlreadyExists. A certificate that is not a CA, or is outside its
// validity period, is ErrInvalid.
func (r *Registry) RegisterCACertificate(ctx context.Context, pemText string, autoRegistration bool) (fleet.CACertificate, error) {
	const op = "RegisterCACertificate"
	if err := r.f.before(ctx, op); err != nil {
		return fleet.CACertificate{}, err
	}
	cert, err := fleet.ParseCertificatePEM(pemText)
	if err != nil {
		return fleet.CACertificate{}, fmt.Errorf("%s: %w", op, err)
	}
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return fleet.CACertificate{}, fmt.Errorf("%s: %s is not a CA certificate: %w", op, cert.Subject.CommonName, fleet.ErrInvalid)
	}
	if now := r.f.now(); now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
		return fleet.CACertificate{}, fmt.Errorf("%s: CertificateValidityException: CA certificate is outside its validity period: %w", op, fleet.ErrInvalid)
	}
	id := fleet.CertificateID(cert)
	ca := fleet.CACertificate{
		ID: id, ARN: r.arn("cacert", id), PEM: fleet.EncodePEM(cert),
		Status: fleet.CertActive, AutoRegistration: autoRegistration,
	}
	r.mu.Lock()
	if r.cas[id] != nil {
		err = fmt.Errorf("%s: ResourceAlreadyExistsException: CA certificate %s: %w", op, id, fleet.ErrAlreadyExists)
	} else {
		rec := &caRec{c: ca, x509: cert}
		r.cas[id] = rec
		r.noteCA(rec)
	}
	wait := r.unlock()
	if err != nil {
		return fleet.CACertificate{}, err
	}
	if err := kept(op, wait); err != nil {
		return fleet.CACertificate{}, err
	}
	r.f.afterHook(ctx, op)
	return ca, nil
}

// SetCAStatus sets a CA certificate's status to ACTIVE or INACTIVE (AWS
// UpdateCACertificate). Unknown: ErrNotFound; another status: ErrInvalid.
func (r *Registry) SetCAStatus(ctx context.Context, id string, status fleet.CertStatus) error {
	const op = "UpdateCACertificate"
	if err := r.f.before(ctx, op); err != nil {
		return err
	}
	if status != fleet.CertActive && status != fleet.CertInactive {
		return fmt.Errorf("%s: CA status %q (want ACTIVE or INACTIVE): %w", op, status, fleet.ErrInvalid)
	}
	r.mu.Lock()
	rec := r.cas[id]
	if rec != nil && rec.c.Status != status {
		rec.c.Status = status
		r.noteCA(rec)
	}
	wait := r.unlock()
	if rec == nil {
		return fmt.Errorf("%s: CA certificate %s: %w", op, id, fleet.ErrNotFound)
	}
	if err := kept(op, wait); err != nil {
		return err
	}
	r.f.afterHook(ctx, op)
	return nil
}

// CACertificateList returns the registered CA certificates, by id, PEM
// included. It is an inspection for the local broker and tests: no hook,
// latency or quota (the API call is ListCACertificates).
func (r *Registry) CACertificateList() []fleet.CACertificate {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]fleet.CACertificate, 0, len(r.cas))
	for _, id := range slices.Sorted(maps.Keys(r.cas)) {
		out = append(out, r.cas[id].c)
	}
	return out
}

// AutoRegister is what IoT Core does when a device presents an unknown
// certificate during the TLS handshake: a certificate signed by an ACTIVE CA
// with auto-registration is registered PENDING_ACTIVATION (created=true). A
// known certificate is returned as it is (created=false). A certificate of no
// such CA, or outside its validity period, is ErrInvalid. No hook, latency or
// quota applies: it is not an API call.
func (r *Registry) AutoRegister(ctx context.Context, deviceCertPEM string) (fleet.Certificate, bool, error) {
	const op = "AutoRegister"
	if err := ctx.Err(); err != nil {
		return fleet.Certificate{}, false, fmt.Errorf("%s: %w: %w", op, fleet.ErrUnavailable, err)
	}
	cert, err := fleet.ParseCertificatePEM(deviceCertPEM)
	if err != nil {
		return fleet.Certificate{}, false, fmt.Errorf("%s: %w", op, err)
	}
	if now := r.f.now(); now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
		return fleet.Certificate{}, false, fmt.Errorf("%s: certificate is outside its validity period: %w", op, fleet.ErrInvalid)
	}
	c, created, err := r.register(op, cert, fleet.CertPendingActivation, true)
	if created {
		r.certificateChanged(c.ID, c.Status)
	}
	return c, created, err
}

// CreatePolicy creates a policy. The name follows AWS's policy-name rules and
// the document must be JSON (ErrInvalid); an existing name is
// ErrAlreadyExists.
func (r *Registry) CreatePolicy(ctx context.Context, name, document string) error {
	const op = "CreatePolicy"
	if err := r.f.before(ctx, op); err != nil {
		return err
	}
	if err := fleet.ValidatePolicyName(name); err != nil {
		return fmt.Errorf("%s: policy name: %w", op, err)
	}
	if !json.Valid([]byte(document)) {
		return fmt.Errorf("%s: MalformedPolicyException: policy %s is not JSON: %w", op, name, fleet.ErrInvalid)
	}
	r.mu.Lock()
	_, exists := r.policies[name]
	if !exists {
		r.policies[name] = document
		r.note(journal.Put(r.jr.policies(), []byte(name), []byte(document)))
	}
	wait := r.unlock()
	if exists {
		return fmt.Errorf("%s: ResourceAlreadyExistsException: policy %s: %w", op, name, fleet.ErrAlreadyExists)
	}
	if err := kept(op, wait); err != nil {
		return err
	}
	r.f.afterHook(ctx, op)
	return nil
}

// ReplacePolicy makes document the policy's document, as AWS's
// CreatePolicyVersion with setAsDefault does (the older versions are not
// kept here): how a restarted local stack brings a kept device policy up
// to date. An unknown policy is ErrNotFound; a document that is not JSON,
// ErrInvalid.
func (r *Registry) ReplacePolicy(ctx context.Context, name, document string) error {
	const op = "CreatePolicyVersion"
	if err := r.f.before(ctx, op); err != nil {
		return err
	}
	if !json.Valid([]byte(document)) {
		return fmt.Errorf("%s: MalformedPolicyException: policy %s is not JSON: %w", op, name, fleet.ErrInvalid)
	}
	r.mu.Lock()
	old, exists := r.policies[name]
	if exists && old != document {
		r.policies[name] = document
		r.note(journal.Put(r.jr.policies(), []byte(name), []byte(document)))
	}
	wait := r.unlock()
	if !exists {
		return fmt.Errorf("%s: policy %s: %w", op, name, fleet.ErrNotFound)
	}
	if err := kept(op, wait); err != nil {
		return err
	}
	r.f.afterHook(ctx, op)
	return nil
}

// GetPolicy returns a policy's document (ErrNotFound).
func (r *Registry) GetPolicy(ctx context.Context, name string) (string, error) {
	const op = "GetPolicy"
	if err := r.f.before(ctx, op); err != nil {
		return "", err
	}
	r.mu.RLock()
	doc, ok := r.policies[name]
	r.mu.RUnlock()
	if !ok {
		return "", fmt.Errorf("%s: policy %s: %w", op, name, fleet.ErrNotFound)
	}
	r.f.afterHook(ctx, op)
	return doc, nil
}

// PoliciesForPrincipal returns the documents of the policies attached to a
// certificate ARN, by policy name, for the broker's policy evaluation. It is
// an inspection: no hook, latency or quota.
func (r *Registry) PoliciesForPrincipal(certARN string) []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	names := slices.Sorted(maps.Keys(r.prPol[certARN]))
	docs := make([]string, 0, len(names))
	for _, n := range names {
		docs = append(docs, r.policies[n])
	}
	return docs
}

// ThingsForPrincipal returns the names of the things a certificate ARN is
// attached to, sorted (for iot:Connection.Thing.* in the broker). It is an
// inspection: no hook, latency or quota.
func (r *Registry) ThingsForPrincipal(certARN string) []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []string
	for thing, prs := range r.thingPr {
		if _, ok := prs[certARN]; ok {
			out = append(out, thing)
		}
	}
	slices.Sort(out)
	return out
}

// CertificateByID returns a certificate without going through the API (no
// hook, latency or quota): the broker's lookup at connect time.
func (r *Registry) CertificateByID(id string) (fleet.Certificate, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	rec := r.certs[id]
	if rec == nil {
		return fleet.Certificate{}, false
	}
	return rec.c, true
}

// CertificateRegisteredAt returns when a certificate was registered (its
// creationDate): the certificateRegistrationTimestamp of IoT Core's
// registered event, the same for every event of one registration.
func (r *Registry) CertificateRegisteredAt(id string) (time.Time, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	rec := r.certs[id]
	if rec == nil {
		return time.Time{}, false
	}
	return rec.c.CreatedAt, true
}

// CertificateList returns every certificate, by id. An inspection (the API
// call is ListCertificatesByCA).
func (r *Registry) CertificateList() []fleet.Certificate {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]fleet.Certificate, 0, len(r.certs))
	for _, id := range slices.Sorted(maps.Keys(r.certs)) {
		out = append(out, r.certs[id].c)
	}
	return out
}

// ThingList returns every thing, by name. An inspection (the API call is
// ListThings).
func (r *Registry) ThingList() []fleet.Thing {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]fleet.Thing, 0, len(r.things))
	for _, n := range slices.Sorted(maps.Keys(r.things)) {
		out = append(out, copyThing(r.things[n]))
	}
	return out
}

// State is a deep copy of a registry's whole state. Two states compare with
// reflect.DeepEqual or Equal; every map and slice is non-nil and every list
// is sorted, so equal registries give equal states.
type State struct {
	// Certificates leave CreatedAt out (zero): when a registration was made
	// is no outcome of a workflow. The fault matrices compare the state of a
	// world that ran a workflow cleanly with that of another world that ran
	// it with faults, and the two register at different times.
	// CertificateByID and CertificateRegisteredAt have it.
	Certificates   map[string]fleet.Certificate   // by id
	CACertificates map[string]fleet.CACertificate // by id
	Things         map[string]fleet.Thing         // by name
	Policies       map[string]string              // name -> document
	// ThingPrincipals maps a thing to its attached principal ARNs (sorted);
	// things without principals are absent.
	ThingPrincipals map[string][]string
	// PrincipalPolicies maps a principal ARN to its attached policy names
	// (sorted); principals without policies are absent.
	PrincipalPolicies map[string][]string
}

// Snapshot returns a deep copy of the registry's state.
func (r *Registry) Snapshot() State {
	r.mu.RLock()
	defer r.mu.RUnlock()
	s := State{
		Certificates:      make(map[string]fleet.Certificate, len(r.certs)),
		CACertificates:    make(map[string]fleet.CACertificate, len(r.cas)),
		Things:            make(map[string]fleet.Thing, len(r.things)),
		Policies:          maps.Clone(r.policies),
		ThingPrincipals:   make(map[string][]string, len(r.thingPr)),
		PrincipalPolicies: make(map[string][]string, len(r.prPol)),
	}
	for id, rec := range r.certs {
		c := rec.c
		c.CreatedAt = time.Time{}
		s.Certificates[id] = c
	}
	for id, rec := range r.cas {
		s.CACertificates[id] = rec.c
	}
	for n, th := range r.things {
		s.Things[n] = copyThing(th)
	}
	for th, prs := range r.thingPr {
		if len(prs) > 0 {
			s.ThingPrincipals[th] = slices.Sorted(maps.Keys(prs))
		}
	}
	for pr, pols := range r.prPol {
		if len(pols) > 0 {
			s.PrincipalPolicies[pr] = slices.Sorted(maps.Keys(pols))
		}
	}
	return s
}

// Equal reports whether two states are the same.
func (s State) Equal(o State) bool { return reflect.DeepEqual(s, o) }
