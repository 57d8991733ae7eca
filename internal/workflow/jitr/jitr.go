// Package jitr is the just-in-time registration workflow: the Lambda invoked
// by the IoT rule on $aws/events/certificates/registered/#. It validates the
// auto-registered device certificate and onboards the device in its region
// with a saga (thing, principal, policy, inventory, activation), or revokes the
// certificate when it must never connect.
//
// The event is published again every time a device presents a
// PENDING_ACTIVATION certificate, so the handler is idempotent: every step
// reads first and changes only what is missing. Duplicates are dropped before
// any registry call by this process's memory first and then, with
// Config.Claims, by the region's claims table that every instance shares.
package jitr

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/core/saga"
	"github.com/mriot/mriot/internal/workflow/converge"
)

// Registry is what jitr needs of its region's IoT registry: what the
// convergence needs (the CA certificates to validate against among it).
type Registry = converge.Registry

// Inventory is what jitr needs of its region's inventory replica.
type Inventory = converge.Inventory

// Leases is the region's device lease table.
type Leases = converge.Leases

// Claims is the region's claims table, shared by every jitr instance of the
// region: it drops a duplicate event that another instance is handling, or
// onboarded moments ago, before any registry call. Its semantics are
// contract.Claims's, where they are written once and tested
// (testkit/contracttest) against the fake and the DynamoDB adapter.
type Claims interface {
	Claim(ctx context.Context, certID, registered string, now, until time.Time) (fleet.ClaimState, error)
	Done(ctx context.Context, certID, registered string, until time.Time) error
	Release(ctx context.Context, certID, registered string) error
}

// Function is the function name in logs and metric dimensions.
const Function = "jitr"

// Rejection reasons beyond the fleet.Reason* certificate reasons.
const (
	ReasonBadEvent        = "bad_event"
	ReasonCertGone        = "certificate_not_found"
	ReasonRevoked         = "device_revoked"
	ReasonAlreadyRevoked  = "certificate_revoked"
	ReasonCANotRegistered = "ca_not_registered"
	ReasonNotPending      = "certificate_not_pending"
)

// Config holds a Handler's dependencies.
type Config struct {
	Registry   Registry
	Inventory  Inventory
	Leases     Leases
	Region     string
	PolicyName string
	// Lease tunes the device leases (duration, wait, sleep, run ids); its
	// other fields are taken from this Config.
	Lease   converge.Config
	Now     func() time.Time // time.Now when nil
	Log     *slog.Logger     // discarded when nil
	Metrics obs.Metrics      // dropped when nil
	Tracer  obs.Tracer       // none when nil
	// Runner carries the saga settings (reserve, undo budget); its Log,
	// Metrics, Tracer and Now are filled from the fields above when unset.
	Runner saga.Runner
	// Claims is the region's shared claims table; nil: duplicates are
	// dropped per process only.
	Claims Claims
}

// Handler handles registered-certificate events.
type Handler struct {
	reg     Registry
	engine  *converge.Engine
	region  string
	now     func() time.Time
	log     *slog.Logger
	metrics obs.Metrics
	claims  Claims // nil: no shared claims

	mu       sync.Mutex
	inFlight map[string]bool      // certificate ids being handled in this process
	done     map[string]doneEntry // certificate ids this process onboarded
	caPEM    map[string]string    // CA certificate PEMs by id (an id is the hash of the DER: immutable)
}

// doneEntry records an onboarding: when, and the certificate's registration
// timestamp from the event.
type doneEntry struct {
	at         time.Time
	registered string
}

// doneTTL is how long an onboarded certificate's later events are dropped
// without a registry call. A decommissioned device's certificate is deleted,
// and if the device comes back IoT registers it again under the same id: that
// event carries a new registration timestamp and is handled (and revoked) at
// once; the window bounds the case where the event carries none.
const doneTTL = 2 * time.Minute

// doneTTLRegistered is how long an onboarded registration's later events are
// dropped when they carry its registration timestamp. A new registration of
// the certificate (the device came back after a decommission) carries
// another and is handled at once, so the window hides nothing: it only saves
// the DescribeCertificate of every event a device's reconnects left queued
// behind an onboarding storm (docs/performance.md, "Scale curve": at 10,000
// devices 14,600 of 24,500 calls were those, 2.45 x the floor; 1.00 x with
// this window).
const doneTTLRegistered = 6 * time.Hour

// doneWindow is how long an onboarding of registration drops its later
// events: doneTTLRegistered when the events can tell registrations apart.
func doneWindow(registered string) time.Duration {
	if registered == "" {
		return doneTTL
	}
	return doneTTLRegistered
}

// claimLease is how long a claim in the shared claims table holds off the
// other instances' duplicates: longer than the function's timeout (30 s in
// template.yaml), so that a run that ends within its timeout never sees its
// claim taken over, and short enough that a run that crashed (its claim never
// released) delays the device's next attempt by a minute at most.
const claimLease = 60 * time.Second

// claimsFinishTimeout bounds the write that ends a shared claim; it runs on a
// context that outlives the invocation's cancellation.
const claimsFinishTimeout = 5 * time.Second

// maxCached bounds the done and CA caches of one process.
const maxCached = 10000

// New checks cfg and returns a Handler.
func New(cfg Config) (*Handler, error) {
	switch {
	case cfg.Registry == nil:
		return nil, errors.New("jitr: no registry")
	case cfg.Inventory == nil:
		return nil, errors.New("jitr: no inventory")
	case cfg.Leases == nil:
		return nil, errors.New("jitr: no lease table")
	case cfg.Region == "":
		return nil, errors.New("jitr: no region")
	}
	h := &Handler{
		reg: cfg.Registry, region: cfg.Region, now: cfg.Now, log: cfg.Log, metrics: cfg.Metrics, claims: cfg.Claims,
		inFlight: map[string]bool{}, done: map[string]doneEntry{}, caPEM: map[string]string{},
	}
	if h.now == nil {
		h.now = time.Now
	}
	if h.log == nil {
		h.log = obs.Discard()
	}
	if h.metrics == nil {
		h.metrics = obs.Nop{}
	}
	ec := cfg.Lease
	ec.Registry, ec.Inventory, ec.Leases, ec.Region, ec.PolicyName = cfg.Registry, cfg.Inventory, cfg.Leases, cfg.Region, cfg.PolicyName
	ec.Now, ec.Log, ec.Metrics, ec.Tracer, ec.Runner = h.now, h.log, h.metrics, cfg.Tracer, cfg.Runner
	var err error
	if h.engine, err = converge.New(ec); err != nil {
		return nil, fmt.Errorf("jitr: %w", err)
	}
	return h, nil
}

// Invoke is the Lambda entry point (lambda.Handler): payload is the event
// JSON exactly as the IoT rule delivers it. A malformed event is logged,
// counted and dropped (nil error: retrying cannot fix it).
func (h *Handler) Invoke(ctx context.Context, payload []byte) ([]byte, error) {
	ev, err := fleet.ParseCertificateRegisteredEvent(payload)
	if err != nil {
		h.reject(ctx, ReasonBadEvent, err, slog.Int("bytes", len(payload)))
		return nil, nil
	}
	if err := h.Handle(ctx, ev); err != nil {
		return nil, err
	}
	return nil, nil
}

// Handle runs the workflow for one event. It returns nil when the device is
// onboarded, or when the event was refused for good (logged and counted); an
// error when Lambda should deliver it again (a retryable failure) or when a
// terminal failure was rolled back (so that the event reaches the
// on-failure destination).
func (h *Handler) Handle(ctx context.Context, ev fleet.CertificateRegisteredEvent) error {
	log := h.log.With(slog.String("certificateId", ev.CertificateID), slog.String("caCertificateId", ev.CACertificateID))
	// A device that keeps reconnecting while it is onboarded makes IoT publish
	// the event again at every attempt. Where one process handles several
	// events at once (the local stack; a Lambda instance handles one at a
	// time), a second event for a certificate already being handled here is
	// dropped at no registry cost: the run in progress finishes the work, and
	// if it fails, the device's next attempt fires the event again.
	registered := string(ev.RegistrationTimestamp)
	switch h.claim(ev.CertificateID, registered) {
	case claimInProgress:
		log.InfoContext(ctx, "event dropped: this certificate is being onboarded by a run in progress")
		h.metrics.Count("DuplicateEvent", 1, obs.D("Function", Function), obs.D("Reason", "in_progress"))
		return nil
	case claimDone:
		log.InfoContext(ctx, "event dropped: this certificate was onboarded here moments ago")
		h.metrics.Count("DuplicateEvent", 1, obs.D("Function", Function), obs.D("Reason", "recently_onboarded"))
		return nil
	}
	onboarded := false
	defer func() { h.release(ev.CertificateID, registered, onboarded) }()
	// Across instances: the region's claims table, before any registry call.
	switch shared := h.claimShared(ctx, log, ev.CertificateID, registered); shared {
	case fleet.ClaimHeld:
		log.InfoContext(ctx, "event dropped: this certificate is being onboarded by a run in another instance")
		h.metrics.Count("DuplicateEvent", 1, obs.D("Function", Function), obs.D("Reason", "claimed_elsewhere"))
		return nil
	case fleet.ClaimDone:
		log.InfoContext(ctx, "event dropped: this certificate was onboarded by another instance moments ago")
		h.metrics.Count("DuplicateEvent", 1, obs.D("Function", Function), obs.D("Reason", "onboarded_elsewhere"))
		return nil
	case fleet.ClaimTaken:
		defer func() { h.finishShared(ctx, log, ev.CertificateID, registered, onboarded) }()
	}
	cert, err := h.reg.DescribeCertificate(ctx, ev.CertificateID)
	if errors.Is(err, fleet.ErrNotFound) {
		h.reject(ctx, ReasonCertGone, err, slog.String("certificateId", ev.CertificateID))
		return nil
	}
	if err != nil {
		return h.fail(ctx, log, fmt.Errorf("describe certificate %s: %w", ev.CertificateID, err))
	}
	switch cert.Status {
	case fleet.CertRevoked:
		// Revoked already (by an earlier run of this event, or by an operator).
		log.InfoContext(ctx, "certificate is revoked; nothing to do")
		return nil
	case fleet.CertActive:
		// Activation is the last step of onboarding, and IoT publishes the
		// event only for a PENDING_ACTIVATION certificate: an ACTIVE one was
		// onboarded by a run that finished, so this is a stale duplicate
		// (an event published while that run was in progress). One read.
		log.InfoContext(ctx, "certificate is active already; stale event")
		h.metrics.Count("DuplicateEvent", 1, obs.D("Function", Function), obs.D("Reason", "already_active"))
		onboarded = true
		return nil
	case fleet.CertPendingActivation:
	default:
		// INACTIVE (set by an operator, or by a removal in progress), or in
		// transfer: IoT publishes the event only for PENDING_ACTIVATION, so
		// this one is stale, and activating the certificate would undo
		// whoever changed its status.
		h.reject(ctx, ReasonNotPending, fmt.Errorf("certificate %s is %s, not PENDING_ACTIVATION: stale event", cert.ID, cert.Status),
			slog.String("certificateId", cert.ID), slog.String("status", string(cert.Status)))
		return nil
	}
	thing, reason, verr := h.validate(ctx, cert, ev)
	if verr != nil {
		if reason == "" { // not a verdict on the certificate: a registry failure
			return h.fail(ctx, log, verr)
		}
		return h.revoke(ctx, log, cert.ID, reason, verr)
	}
	log = log.With(slog.String("thingName", thing))
	res, err := h.engine.Converge(ctx, thing, converge.Options{Function: Function, Presented: &cert})
	switch {
	case err != nil && res.Found && !res.Item.Status.Valid():
		h.reject(ctx, "bad_item", err, slog.String("thingName", thing))
		return nil
	case err != nil:
		return h.fail(ctx, log, fmt.Errorf("converge %s: %w", thing, err))
	case res.Action == converge.Refused:
		// A certificate issued no later than the device's current one (a
		// renewal that lost to a newer one, a retired certificate coming
		// back) is never onboarded: the convergence revoked it, under the
		// device's lease, so that it never connects and never fires the
		// event again.
		h.metrics.Count("RotationsRefused", 1, obs.D("Function", Function), obs.D("Reason", res.Refusal))
		why := fmt.Sprintf("device %s holds certificate %s: %s", thing, res.Item.CertificateID, res.Detail)
		if res.Refusal == converge.RefusedRetired {
			why = fmt.Sprintf("device %s: certificate %s was retired by a rotation to %s", thing, cert.ID, res.Item.CertificateID)
		}
		log.WarnContext(ctx, "certificate revoked", slog.String("reason", res.Refusal), slog.String("error", why))
		h.metrics.Count("Rejected", 1, obs.D("Function", Function), obs.D("Reason", res.Refusal))
		h.metrics.Count("CertificateRevoked", 1, obs.D("Function", Function), obs.D("Reason", res.Refusal))
		return nil
	case res.Found && res.Item.Status != fleet.StatusActive:
		log.WarnContext(ctx, "certificate revoked", slog.String("reason", ReasonRevoked),
			slog.String("error", fmt.Sprintf("device %s is %s in the inventory", thing, res.Item.Status)))
		h.metrics.Count("Rejected", 1, obs.D("Function", Function), obs.D("Reason", ReasonRevoked))
		h.metrics.Count("CertificateRevoked", 1, obs.D("Function", Function), obs.D("Reason", ReasonRevoked))
		return nil
	case !res.Found:
		// The item went away under the run (a rollback elsewhere): the run
		// converged to no device; the next connection onboards it again.
		log.InfoContext(ctx, "device has no inventory item any more; left for its next connection")
		return nil
	}
	onboarded = true
	if res.Action == converge.Rotated {
		log.InfoContext(ctx, "device rotated to a new certificate", slog.String("region", h.region),
			slog.String("previous", previousCertificate(res.Item)), slog.Int("rounds", res.Rounds))
		return nil
	}
	log.InfoContext(ctx, "device onboarded", slog.Bool("new", res.Action == converge.Onboarded), slog.String("region", h.region),
		slog.Int("rounds", res.Rounds))
	h.metrics.Count("DeviceOnboarded", 1, obs.D("Function", Function))
	return nil
}

type claimResult int

const (
	claimed claimResult = iota
	claimInProgress
	claimDone
)

// claim marks a certificate as being handled in this process, unless it is
// already, or this process onboarded this registration of it within doneTTL.
func (h *Handler) claim(certID, registered string) claimResult {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.inFlight[certID] {
		return claimInProgress
	}
	if d, ok := h.done[certID]; ok {
		window := doneTTL // an event without a registration could be a new one
		if registered != "" && registered == d.registered {
			window = doneTTLRegistered
		}
		sameRegistration := registered == "" || d.registered == "" || registered == d.registered
		if sameRegistration && h.now().Sub(d.at) < window {
			return claimDone
		}
		delete(h.done, certID)
	}
	h.inFlight[certID] = true
	return claimed
}

// release ends a claim, remembering a certificate that was onboarded.
func (h *Handler) release(certID, registered string, onboarded bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.inFlight, certID)
	if !onboarded {
		return
	}
	if len(h.done) >= maxCached {
		now := h.now()
		for id, d := range h.done {
			if now.Sub(d.at) >= doneWindow(d.registered) {
				delete(h.done, id)
			}
		}
		if len(h.done) >= maxCached {
			clear(h.done)
		}
	}
	h.done[certID] = doneEntry{at: h.now(), registered: registered}
}

// claimShared takes the shared claim on the registration. Without a claims
// table, or when the table fails, it returns 0 and the run goes on with the
// in-process deduplication only: the table is an optimisation of the
// registry's quota, and correctness never depends on it. A run whose claim
// failed does not end it either (the claim it did not take may be another
// run's).
func (h *Handler) claimShared(ctx context.Context, log *slog.Logger, certID, registered string) fleet.ClaimState {
	if h.claims == nil {
		return 0
	}
	now := h.now()
	state, err := h.claims.Claim(ctx, certID, registered, now, now.Add(claimLease))
	if err != nil {
		log.WarnContext(ctx, "claims table failed; going on without the shared deduplication", slog.String("error", err.Error()))
		return 0
	}
	return state
}

// finishShared ends this run's shared claim: an onboarded registration is
// marked done for doneWindow, anything else is released so that the next event
// is handled at once. A failure is logged, never returned: an unreleased
// claim expires after claimLease.
func (h *Handler) finishShared(ctx context.Context, log *slog.Logger, certID, registered string, onboarded bool) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), claimsFinishTimeout)
	defer cancel()
	if onboarded {
		if err := h.claims.Done(ctx, certID, registered, h.now().Add(doneWindow(registered))); err != nil {
			log.WarnContext(ctx, "claims table: marking the certificate onboarded failed", slog.String("error", err.Error()))
		}
		return
	}
	if err := h.claims.Release(ctx, certID, registered); err != nil {
		log.WarnContext(ctx, "claims table: releasing the claim failed; it expires by itself", slog.String("error", err.Error()),
			slog.Duration("lease", claimLease))
	}
}

// caCertificatePEM returns a CA certificate's PEM, from the cache when this
// process read it before.
func (h *Handler) caCertificatePEM(ctx context.Context, id string) (string, error) {
	h.mu.Lock()
	pemText, ok := h.caPEM[id]
	h.mu.Unlock()
	if ok {
		return pemText, nil
	}
	ca, err := h.reg.DescribeCACertificate(ctx, id)
	if err != nil {
		return "", err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.caPEM) >= maxCached {
		clear(h.caPEM)
	}
	h.caPEM[id] = ca.PEM
	return ca.PEM, nil
}

// validate checks the certificate against the CA that registered it. It
// returns the thing name, or a rejection reason and error; an error with no
// reason is a registry failure, not a verdict.
func (h *Handler) validate(ctx context.Context, cert fleet.Certificate, ev fleet.CertificateRegisteredEvent) (string, string, error) {
	if cert.CACertificateID != ev.CACertificateID {
		return "", fleet.ReasonCAMismatch, fmt.Errorf("certificate %s is registered under CA %s, event says %s: %w",
			cert.ID, cert.CACertificateID, ev.CACertificateID, fleet.ErrInvalid)
	}
	x, err := fleet.ParseCertificatePEM(cert.PEM)
	if err != nil {
		return "", fleet.ReasonMalformed, fmt.Errorf("certificate %s: %w", cert.ID, err)
	}
	if id := fleet.CertificateID(x); id != cert.ID {
		return "", fleet.ReasonMalformed, fmt.Errorf("certificate PEM has id %s, registry says %s: %w", id, cert.ID, fleet.ErrInvalid)
	}
	caPEM, err := h.caCertificatePEM(ctx, cert.CACertificateID)
	if errors.Is(err, fleet.ErrNotFound) {
		return "", ReasonCANotRegistered, fmt.Errorf("CA certificate %s: %w", cert.CACertificateID, err)
	}
	if err != nil {
		return "", "", fmt.Errorf("describe CA certificate %s: %w", cert.CACertificateID, err)
	}
	caX, err := fleet.ParseCertificatePEM(caPEM)
	if err != nil {
		return "", fleet.ReasonMalformed, fmt.Errorf("CA certificate %s: %w", cert.CACertificateID, err)
	}
	name, err := fleet.ValidateDeviceCertificate(x, caX, h.now())
	if err != nil {
		var ice *fleet.InvalidCertificateError
		reason := fleet.ReasonMalformed
		if errors.As(err, &ice) {
			reason = ice.Reason
		}
		return "", reason, err
	}
	return name, "", nil
}

// revoke sets the certificate REVOKED so that it never connects and the event
// never fires again, logs why and counts it. Only a retryable registry
// failure is returned.
func (h *Handler) revoke(ctx context.Context, log *slog.Logger, certID, reason string, why error) error {
	if err := h.reg.UpdateCertificate(ctx, certID, fleet.CertRevoked); err != nil {
		return h.fail(ctx, log, fmt.Errorf("revoke certificate %s (%s): %w", certID, reason, err))
	}
	log.WarnContext(ctx, "certificate revoked", slog.String("reason", reason), slog.String("error", why.Error()))
	h.metrics.Count("Rejected", 1, obs.D("Function", Function), obs.D("Reason", reason))
	h.metrics.Count("CertificateRevoked", 1, obs.D("Function", Function), obs.D("Reason", reason))
	return nil
}

// reject logs and counts an event that is dropped without retry.
func (h *Handler) reject(ctx context.Context, reason string, why error, attrs ...slog.Attr) {
	attrs = append(attrs, slog.String("function", Function), slog.String("reason", reason), slog.String("error", why.Error()))
	h.log.LogAttrs(ctx, slog.LevelWarn, "event rejected", attrs...)
	h.metrics.Count("Rejected", 1, obs.D("Function", Function), obs.D("Reason", reason))
}

// fail logs a failure that is returned to Lambda, which delivers the event
// again (twice, then to the on-failure destination): class tells whether a
// later delivery can succeed (retryable) or not (terminal).
func (h *Handler) fail(ctx context.Context, log *slog.Logger, err error) error {
	log.ErrorContext(ctx, "jitr failed", slog.String("error", err.Error()), slog.String("class", saga.Class(err)),
		slog.Bool("redelivered", true))
	return err
}

// previousCertificate is the certificate a rotation to item's current one
// retired (the latest retiring one).
func previousCertificate(item fleet.Device) string {
	if len(item.Retiring) == 0 {
		return ""
	}
	return item.Retiring[len(item.Retiring)-1].CertificateID
}
