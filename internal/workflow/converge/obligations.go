package converge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/core/obs"
)

// finishObligations finishes, in the order they were recorded, the
// compensations earlier runs could not: each is done, or superseded by the
// current item (a compensation that would take away what the ACTIVE item
// needs is moot: the convergence that follows keeps it). A transient failure
// stops the run (retryable) with the rest kept; a terminal one is dropped
// with an error log: retrying cannot finish it, and the convergence that
// follows and the reconciler's drift check cover what it left. item and found
// follow a deleted inventory item.
func (r *run) finishObligations(ctx context.Context, item *fleet.Device, found *bool) (int, error) {
	pending := r.ledger.Obligations
	done := 0
	for i, ob := range pending {
		how, err := r.finish(ctx, ob, item, found)
		switch {
		case err == nil:
			done++
			r.e.metrics.Count("ObligationCompleted", 1, obs.D("Function", r.o.Function), obs.D("How", how))
			r.log.InfoContext(ctx, "obligation finished", slog.String("kind", ob.Kind), slog.String("how", how),
				slog.String("saga", ob.Saga), slog.String("step", ob.Step))
		case fleet.IsTransient(err):
			rest := append([]fleet.Obligation(nil), pending[i:]...)
			rest[0].Error = err.Error()
			r.ledger.Obligations = rest
			return done, fmt.Errorf("finish obligation %s of %s: %w", ob.Kind, r.thing, err)
		default:
			r.e.metrics.Count("ObligationAbandoned", 1, obs.D("Function", r.o.Function))
			r.log.ErrorContext(ctx, "obligation cannot be finished; dropped", slog.String("kind", ob.Kind),
				slog.String("saga", ob.Saga), slog.String("step", ob.Step), slog.String("error", err.Error()))
		}
	}
	r.ledger.Obligations = nil
	return done, nil
}

// finish finishes one obligation: "done" or "superseded".
func (r *run) finish(ctx context.Context, ob fleet.Obligation, item *fleet.Device, found *bool) (string, error) {
	// What an ACTIVE item holding the certificate needs is not taken away.
	_, graced := item.InGrace(ob.Certificate, r.e.now())
	needed := *found && item.Status == fleet.StatusActive && (ob.Certificate == "" || ob.Certificate == item.CertificateID || graced)
	reg := r.e.reg
	switch ob.Kind {
	case fleet.ObligationDeleteItem:
		if !*found || item.CertificateID != ob.Certificate || item.OriginRegion != ob.Region || item.Version != ob.Version {
			return "superseded", nil
		}
		if err := r.deleteItemIfOurs(ctx, ob.Certificate, ob.Region, ob.Version); err != nil {
			return "", err
		}
		cur, f, err := r.read(ctx)
		if err != nil {
			return "", err
		}
		*item, *found = cur, f
		return "done", nil
	case fleet.ObligationDetachPolicy:
		if needed {
			return "superseded", nil
		}
		if err := r.guard(ctx); err != nil {
			return "", err
		}
		if err := reg.DetachPolicy(ctx, ob.Policy, ob.Principal); err != nil && !errors.Is(err, fleet.ErrNotFound) {
			return "", fmt.Errorf("detach policy %s from %s: %w", ob.Policy, ob.Principal, err)
		}
	case fleet.ObligationDetachPrincipal:
		if needed {
			return "superseded", nil
		}
		if err := r.guard(ctx); err != nil {
			return "", err
		}
		if err := reg.DetachThingPrincipal(ctx, ob.Thing, ob.Principal); err != nil && !errors.Is(err, fleet.ErrNotFound) {
			return "", fmt.Errorf("detach %s from thing %s: %w", ob.Principal, ob.Thing, err)
		}
	case fleet.ObligationDeleteThing:
		if needed {
			return "superseded", nil
		}
		th, err := reg.DescribeThing(ctx, ob.Thing)
		switch {
		case errors.Is(err, fleet.ErrNotFound):
			return "done", nil
		case err != nil:
			return "", fmt.Errorf("describe thing %s: %w", ob.Thing, err)
		case th.Attributes[CreatedByAttribute] != ob.CreatedBy:
			return "superseded", nil // another saga's thing now
		}
		if err := r.guard(ctx); err != nil {
			return "", err
		}
		if err := reg.DeleteThing(ctx, ob.Thing); err != nil {
			return "", fmt.Errorf("delete thing %s: %w", ob.Thing, err)
		}
	case fleet.ObligationDeleteCertificate:
		if needed {
			return "superseded", nil
		}
		c, err := reg.DescribeCertificate(ctx, ob.Certificate)
		switch {
		case errors.Is(err, fleet.ErrNotFound):
			r.ledger = r.ledger.WithoutCertificate(ob.Certificate)
			return "done", nil
		case err != nil:
			return "", fmt.Errorf("describe certificate %s: %w", ob.Certificate, err)
		case c.Status == fleet.CertActive || c.Status == fleet.CertRevoked || c.Status == fleet.CertPendingActivation:
			// Activated by a later run, revoked, or the device's own
			// registration: the convergence decides.
			return "superseded", nil
		}
		if err := r.guard(ctx); err != nil {
			return "", err
		}
		if err := reg.DeleteCertificate(ctx, ob.Certificate); err != nil && !errors.Is(err, fleet.ErrNotFound) {
			return "", fmt.Errorf("delete certificate %s: %w", ob.Certificate, err)
		}
		r.ledger = r.ledger.WithoutCertificate(ob.Certificate)
	default:
		return "", fmt.Errorf("obligation of unknown kind %q: %w", ob.Kind, fleet.ErrInvalid)
	}
	return "done", nil
}
