package memiot

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/fake/journal"
)

// regJournal is where a restored registry journals its changes: a bucket
// per kind of resource, named after the region.
type regJournal struct {
	j      journal.Journal
	prefix string
	ops    []journal.Op // noted under r.mu, appended by unlock
}

func (jr *regJournal) bucket(kind string) string {
	if jr == nil {
		return ""
	}
	return jr.prefix + kind
}

func (jr *regJournal) certs() string             { return jr.bucket("certificates") }
func (jr *regJournal) cas() string               { return jr.bucket("ca-certificates") }
func (jr *regJournal) things() string            { return jr.bucket("things") }
func (jr *regJournal) policies() string          { return jr.bucket("policies") }
func (jr *regJournal) thingPrincipals() string   { return jr.bucket("thing-principals") }
func (jr *regJournal) principalPolicies() string { return jr.bucket("principal-policies") }

// note queues a change made under r.mu (nothing without a journal).
func (r *Registry) note(op journal.Op) {
	if r.jr != nil {
		r.jr.ops = append(r.jr.ops, op)
	}
}

// unlock appends the changes noted under r.mu as one group, so the journal
// has them in the registry's order, and releases r.mu. The returned wait
// (nil when nothing was noted) is for kept, after the lock.
func (r *Registry) unlock() func() error {
	var wait func() error
	if r.jr != nil && len(r.jr.ops) > 0 {
		wait = r.jr.j.Append(r.jr.ops...)
		r.jr.ops = nil
	}
	r.mu.Unlock()
	return wait
}

// kept waits until a call's changes are durable; a journal that fails fails
// the call with ErrUnavailable (the change is made in memory, but would not
// survive a restart).
func kept(op string, wait func() error) error {
	if wait == nil {
		return nil
	}
	if err := wait(); err != nil {
		return fmt.Errorf("%s: the change was made but not kept (%w): %w", op, err, fleet.ErrUnavailable)
	}
	return nil
}

// The stored forms. Certificates and CAs keep their PEM, from which the
// rest is derived again (id, ARN, parsed certificate).
type storedCert struct {
	PEM       string           `json:"pem"`
	Status    fleet.CertStatus `json:"status"`
	CA        string           `json:"caCertificateId"`
	CreatedAt int64            `json:"createdAt"` // Unix nanoseconds
}

type storedCA struct {
	PEM              string           `json:"pem"`
	Status           fleet.CertStatus `json:"status"`
	AutoRegistration bool             `json:"autoRegistration"`
}

type storedThing struct {
	Attributes map[string]string `json:"attributes"`
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("memiot: stored form does not encode: " + err.Error()) // strings, bools and numbers only
	}
	return b
}

func (r *Registry) noteCert(rec *certRec) {
	if r.jr == nil {
		return
	}
	r.note(journal.Put(r.jr.certs(), []byte(rec.c.ID), mustJSON(storedCert{
		PEM: rec.c.PEM, Status: rec.c.Status, CA: rec.c.CACertificateID, CreatedAt: rec.c.CreatedAt.UnixNano(),
	})))
}

func (r *Registry) noteCA(rec *caRec) {
	if r.jr == nil {
		return
	}
	r.note(journal.Put(r.jr.cas(), []byte(rec.c.ID), mustJSON(storedCA{
		PEM: rec.c.PEM, Status: rec.c.Status, AutoRegistration: rec.c.AutoRegistration,
	})))
}

func (r *Registry) noteThing(th fleet.Thing) {
	if r.jr == nil {
		return
	}
	r.note(journal.Put(r.jr.things(), []byte(th.Name), mustJSON(storedThing{Attributes: th.Attributes})))
}

// pairKey is an attachment's key: its two names, which hold no NUL (thing
// names, ARNs and policy names cannot).
func pairKey(a, b string) []byte { return []byte(a + "\x00" + b) }

func splitPair(k []byte) (string, string, bool) {
	a, b, ok := strings.Cut(string(k), "\x00")
	return a, b, ok && a != "" && b != "" && !strings.Contains(b, "\x00")
}

// Restore loads the registry's state from j, where a registry of the same
// region kept it, and journals every later change into j: an API call
// returns once its change is durable. Call it once, on a new registry,
// before any other call. A record that does not decode, or refers to what
// is not there, fails Restore with journal.ErrCorrupt, and the registry
// journals nothing.
func (r *Registry) Restore(j journal.Journal) error {
	if j == nil {
		return errors.New("restore registry of " + r.region + ": no journal")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.jr != nil {
		return errors.New("restore registry of " + r.region + ": restored already")
	}
	if len(r.certs)+len(r.cas)+len(r.things)+len(r.policies) > 0 {
		return errors.New("restore registry of " + r.region + ": the registry is not empty")
	}
	jr := &regJournal{j: j, prefix: "iot/" + r.region + "/"}
	if err := r.load(jr); err != nil {
		// Nothing half-loaded stays.
		clear(r.certs)
		clear(r.cas)
		clear(r.things)
		clear(r.policies)
		clear(r.thingPr)
		clear(r.prPol)
		return fmt.Errorf("restore registry of %s: %w", r.region, err)
	}
	r.jr = jr
	return nil
}

// load reads every bucket; CAs and things before what refers to them. The
// caller holds r.mu.
func (r *Registry) load(jr *regJournal) error {
	j := jr.j
	err := j.Scan(jr.cas(), func(k, v []byte) error {
		rec, err := r.decodeCA(string(k), v)
		if err != nil {
			return err
		}
		r.cas[rec.c.ID] = rec
		return nil
	})
	if err != nil {
		return err
	}
	if err := j.Scan(jr.certs(), func(k, v []byte) error {
		rec, err := r.decodeCert(string(k), v)
		if err != nil {
			return err
		}
		r.certs[rec.c.ID] = rec
		return nil
	}); err != nil {
		return err
	}
	if err := j.Scan(jr.things(), func(k, v []byte) error {
		th, err := r.decodeThing(string(k), v)
		if err != nil {
			return err
		}
		r.things[th.Name] = th
		return nil
	}); err != nil {
		return err
	}
	if err := j.Scan(jr.policies(), func(k, v []byte) error {
		name := string(k)
		if err := fleet.ValidatePolicyName(name); err != nil {
			return fmt.Errorf("policy %q: %w: %w", k, journal.ErrCorrupt, err)
		}
		if !json.Valid(v) {
			return fmt.Errorf("policy %s is not JSON: %w", name, journal.ErrCorrupt)
		}
		r.policies[name] = string(v)
		return nil
	}); err != nil {
		return err
	}
	if err := j.Scan(jr.thingPrincipals(), func(k, _ []byte) error {
		thing, arn, ok := splitPair(k)
		if !ok {
			return fmt.Errorf("thing principal %q: %w", k, journal.ErrCorrupt)
		}
		if _, ok := r.things[thing]; !ok {
			return fmt.Errorf("principal attached to thing %s, which is not kept: %w", thing, journal.ErrCorrupt)
		}
		if _, err := r.certFromARN("restore", arn); err != nil {
			return fmt.Errorf("principal %s attached to thing %s: %w: %w", arn, thing, journal.ErrCorrupt, err)
		}
		addPair(r.thingPr, thing, arn)
		return nil
	}); err != nil {
		return err
	}
	return j.Scan(jr.principalPolicies(), func(k, _ []byte) error {
		arn, policy, ok := splitPair(k)
		if !ok {
			return fmt.Errorf("principal policy %q: %w", k, journal.ErrCorrupt)
		}
		if _, ok := r.policies[policy]; !ok {
			return fmt.Errorf("policy %s, which is not kept, attached to %s: %w", policy, arn, journal.ErrCorrupt)
		}
		if _, err := r.certFromARN("restore", arn); err != nil {
			return fmt.Errorf("policy %s attached to %s: %w: %w", policy, arn, journal.ErrCorrupt, err)
		}
		addPair(r.prPol, arn, policy)
		return nil
	})
}

// decodeCert decodes a stored certificate: its PEM must parse and be the
// certificate its key names.
func (r *Registry) decodeCert(id string, v []byte) (*certRec, error) {
	var sc storedCert
	if err := json.Unmarshal(v, &sc); err != nil {
		return nil, fmt.Errorf("certificate %q: %w: %w", id, journal.ErrCorrupt, err)
	}
	cert, err := fleet.ParseCertificatePEM(sc.PEM)
	if err != nil {
		return nil, fmt.Errorf("certificate %q: %w: %w", id, journal.ErrCorrupt, err)
	}
	switch {
	case fleet.CertificateID(cert) != id:
		return nil, fmt.Errorf("certificate %q holds certificate %s: %w", id, fleet.CertificateID(cert), journal.ErrCorrupt)
	case !knownStatus(sc.Status):
		return nil, fmt.Errorf("certificate %s: status %q: %w", id, sc.Status, journal.ErrCorrupt)
	case !validCertID(sc.CA):
		return nil, fmt.Errorf("certificate %s: CA certificate id %q: %w", id, sc.CA, journal.ErrCorrupt)
	}
	// The CA may have been deleted since (not possible here, but in AWS a
	// certificate outlives its CA's registration): not checked.
	return &certRec{
		c: fleet.Certificate{ID: id, ARN: r.arn("cert", id), PEM: fleet.EncodePEM(cert), CACertificateID: sc.CA,
			Status: sc.Status, CreatedAt: time.Unix(0, sc.CreatedAt)},
		x509: cert,
	}, nil
}

func (r *Registry) decodeCA(id string, v []byte) (*caRec, error) {
	var sc storedCA
	if err := json.Unmarshal(v, &sc); err != nil {
		return nil, fmt.Errorf("CA certificate %q: %w: %w", id, journal.ErrCorrupt, err)
	}
	cert, err := fleet.ParseCertificatePEM(sc.PEM)
	if err != nil {
		return nil, fmt.Errorf("CA certificate %q: %w: %w", id, journal.ErrCorrupt, err)
	}
	switch {
	case fleet.CertificateID(cert) != id:
		return nil, fmt.Errorf("CA certificate %q holds certificate %s: %w", id, fleet.CertificateID(cert), journal.ErrCorrupt)
	case sc.Status != fleet.CertActive && sc.Status != fleet.CertInactive:
		return nil, fmt.Errorf("CA certificate %s: status %q: %w", id, sc.Status, journal.ErrCorrupt)
	}
	return &caRec{
		c: fleet.CACertificate{ID: id, ARN: r.arn("cacert", id), PEM: fleet.EncodePEM(cert), Status: sc.Status,
			AutoRegistration: sc.AutoRegistration},
		x509: cert,
	}, nil
}

func (r *Registry) decodeThing(name string, v []byte) (fleet.Thing, error) {
	if err := fleet.ValidateThingName(name); err != nil {
		return fleet.Thing{}, fmt.Errorf("thing %q: %w: %w", name, journal.ErrCorrupt, err)
	}
	var st storedThing
	if err := json.Unmarshal(v, &st); err != nil {
		return fleet.Thing{}, fmt.Errorf("thing %s: %w: %w", name, journal.ErrCorrupt, err)
	}
	if st.Attributes == nil {
		st.Attributes = map[string]string{}
	}
	return fleet.Thing{Name: name, ARN: r.arn("thing", name), Attributes: st.Attributes}, nil
}
