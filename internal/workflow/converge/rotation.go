package converge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/core/saga"
)

// Certificate rotation.
//
// A device whose item is ACTIVE with certificate A and that presents a new
// valid certificate B (jitr: same CA set, CN = thing name) rotates when B's
// NotBefore is later than A's: the item then names B as current and keeps A
// in Retiring until RetireAt = now + the rotation grace. During the grace
// every region keeps A registered, attached and ACTIVE beside B; from
// RetireAt on, every convergence of the device removes A (deactivate,
// detach, delete, as any certificate the item does not account for), and
// once RetireAt + RetireKeep has passed a convergence that removed it in
// its own region drops A from the item. Each region's ledger keeps A until
// it removed it there, so a region that missed the drop still removes A on
// its next convergence (the drop's own stream record triggers one).
//
// A presented certificate issued no later than the current one (a renewal
// that lost a race, a retired certificate coming back) is refused
// (Result.Refusal): jitr revokes it.

// Step names of the rotation.
const (
	StepRotateInventory = "rotate-inventory"
	StepKeepRetiring    = "keep-retiring"
)

// Refusals of a presented certificate (Result.Refusal).
const (
	// RefusedOlder: the presented certificate's NotBefore is not later than
	// the current certificate's.
	RefusedOlder = "rotation_not_newer"
	// RefusedRetired: the presented certificate was retired (past its grace).
	RefusedRetired = "certificate_retired"
)

// Defaults of the rotation.
const (
	// DefaultRotationGrace is how long a rotated-out certificate stays
	// valid everywhere (ROTATION_GRACE).
	DefaultRotationGrace = fleet.DefaultRotationGrace
	// DefaultRetireKeep is how long past its RetireAt a retired certificate
	// stays named in the item, so that every region's reconciler finds it
	// due through the item's retirement index (at every invocation) and
	// removes it there, whatever its replicate runs did.
	DefaultRetireKeep = 24 * time.Hour
)

// RotationGrace is how long a rotated-out certificate stays valid.
func (e *Engine) RotationGrace() time.Duration { return e.grace }

// RetireKeep is how long past its RetireAt a retired certificate stays
// named in the item.
func (e *Engine) RetireKeep() time.Duration { return e.keep }

// rotation decides what a presented certificate p other than the ACTIVE
// item's current one makes of the item: the rotated item, or a refusal.
func (r *run) rotation(item fleet.Device, p fleet.Certificate) (fleet.Device, string, error) {
	now := r.e.now()
	if slices.ContainsFunc(item.Retiring, func(c fleet.RetiringCertificate) bool { return c.CertificateID == p.ID }) {
		return fleet.Device{}, RefusedRetired, nil
	}
	cur, err := item.CurrentNotBefore()
	if err != nil {
		return fleet.Device{}, "", err
	}
	x, err := fleet.ParseCertificatePEM(p.PEM)
	if err != nil {
		return fleet.Device{}, "", fmt.Errorf("presented certificate %s: %w", p.ID, err)
	}
	if !x.NotBefore.After(cur) {
		r.refusal = fmt.Sprintf("certificate %s was issued %s, not after the current certificate %s (%s)",
			p.ID, x.NotBefore.UTC().Format(time.RFC3339), item.CertificateID, cur.UTC().Format(time.RFC3339))
		return fleet.Device{}, RefusedOlder, nil
	}
	d, err := item.Rotated(p, now.Add(r.e.grace), r.e.region, now)
	return d, "", err
}

// rotateItemStep writes the rotated item, conditionally on the version it
// was derived from. A changed item supersedes the run. The undo puts the
// previous item back, exactly (its version too), while the item is still
// the one this run wrote.
func (r *run) rotateItemStep(prev, item fleet.Device) saga.Step {
	return saga.Step{
		Name: StepRotateInventory,
		Do: func(ctx context.Context) (bool, error) {
			if err := r.guard(ctx); err != nil {
				return false, err
			}
			err := r.e.inv.Update(ctx, item, prev.Version)
			switch {
			case errors.Is(err, fleet.ErrConditionFailed), errors.Is(err, fleet.ErrNotFound):
				return false, errItemChanged
			case err != nil:
				return false, fmt.Errorf("write rotated inventory of %s: %w", r.thing, err)
			}
			r.log.InfoContext(ctx, "certificate rotated", slog.String("certificateId", item.CertificateID),
				slog.String("previous", prev.CertificateID), slog.Time("retireAt", item.Retiring[len(item.Retiring)-1].RetireAt),
				slog.Int64("version", item.Version))
			return true, nil
		},
		Undo: func(ctx context.Context) error {
			cur, found, err := r.read(ctx)
			if err != nil {
				return err
			}
			if !found || !same(cur, item) {
				return nil // rewritten since: not ours any more
			}
			if err := r.guard(ctx); err != nil {
				return err
			}
			// The previous item exactly, as the write never happened (as
			// onboarding's undo deletes the item it created): a run that
			// read it before derives the same from it.
			if err := r.e.inv.Update(ctx, prev, item.Version); err != nil && !errors.Is(err, fleet.ErrConditionFailed) {
				return fmt.Errorf("put back the inventory of %s: %w", r.thing, err)
			}
			return nil
		},
	}
}

// keepRetiring keeps the item's retiring certificates in their grace
// period usable here: registered (from the item's PEM), attached to the
// thing, the policy attached, and ACTIVE after the item is read once more.
// Roll-forward only: a retiring certificate only ever loses access.
func (r *run) keepRetiring(ctx context.Context, item fleet.Device) (Action, error) {
	graced := item.Graced(r.e.now())
	if len(graced) == 0 {
		return Unchanged, nil
	}
	steps := make([]saga.Step, 0, len(graced))
	for _, c := range graced {
		steps = append(steps, r.keepStep(item, c))
	}
	res, err := r.runSaga(ctx, r.o.Function+"/"+r.e.region+"/"+r.thing+"/retiring", steps)
	if err != nil {
		return "", fmt.Errorf("keep the retiring certificates of %s: %w", r.thing, err)
	}
	if changed(res) {
		return Converged, nil
	}
	return Unchanged, nil
}

// keepStep makes one retiring certificate usable here (see keepRetiring). A
// certificate REVOKED here stays so (it is not the device's current one:
// the device keeps access with that).
func (r *run) keepStep(item fleet.Device, c fleet.RetiringCertificate) saga.Step {
	id := c.CertificateID
	return saga.Step{
		Name: StepKeepRetiring,
		Do: func(ctx context.Context) (bool, error) {
			if err := r.note(ctx, id); err != nil {
				return false, err
			}
			changed := false
			cert, err := r.e.reg.DescribeCertificate(ctx, id)
			switch {
			case errors.Is(err, fleet.ErrNotFound):
				if err := checkPEM(fleet.Device{ThingName: r.thing, CertificateID: id, CertificatePEM: c.CertificatePEM}); err != nil {
					return false, err
				}
				if err := r.guard(ctx); err != nil {
					return false, err
				}
				cert, err = r.e.reg.RegisterCertificate(ctx, c.CertificatePEM, fleet.CertInactive)
				switch {
				case errors.Is(err, fleet.ErrAlreadyExists):
					cert, err = r.e.reg.DescribeCertificate(ctx, id)
				case errors.Is(err, fleet.ErrInvalid) && !r.e.caRegistered(ctx, c.CACertificateID):
					// Its CA is not registered here (any more): the device
					// cannot connect here with it anyway.
					r.ledger = r.ledger.WithoutCertificate(id)
					r.log.WarnContext(ctx, "retiring certificate not kept in this region: its CA is not registered here",
						slog.String("certificateId", id), slog.String("caCertificateId", c.CACertificateID))
					return false, nil
				case err == nil:
					changed = true
				}
				if err != nil {
					return changed, fmt.Errorf("register retiring certificate %s: %w", id, err)
				}
			case err != nil:
				return false, fmt.Errorf("describe retiring certificate %s: %w", id, err)
			}
			if cert.Status == fleet.CertRevoked {
				return changed, nil
			}
			prs, err := r.e.reg.ListThingPrincipals(ctx, r.thing)
			if err != nil {
				return changed, fmt.Errorf("list principals of thing %s: %w", r.thing, err)
			}
			if !slices.Contains(prs, cert.ARN) {
				if err := r.guard(ctx); err != nil {
					return changed, err
				}
				if err := r.e.reg.AttachThingPrincipal(ctx, r.thing, cert.ARN); err != nil {
					return changed, fmt.Errorf("attach %s to thing %s: %w", cert.ARN, r.thing, err)
				}
				changed = true
			}
			pols, err := r.e.reg.ListAttachedPolicies(ctx, cert.ARN)
			if err != nil {
				return changed, fmt.Errorf("list policies of %s: %w", cert.ARN, err)
			}
			if !slices.Contains(pols, r.e.policy) {
				if err := r.guard(ctx); err != nil {
					return changed, err
				}
				if err := r.e.reg.AttachPolicy(ctx, r.e.policy, cert.ARN); err != nil {
					return changed, fmt.Errorf("attach policy %s to %s: %w", r.e.policy, cert.ARN, err)
				}
				changed = true
			}
			if cert.Status == fleet.CertActive {
				return changed, nil
			}
			cur, found, err := r.read(ctx)
			if err != nil {
				return changed, err
			}
			if !found || !same(cur, item) {
				return changed, errItemChanged
			}
			if _, ok := cur.InGrace(id, r.e.now()); !ok {
				return changed, nil // its grace ended meanwhile
			}
			if err := r.guard(ctx); err != nil {
				return changed, err
			}
			if err := r.e.reg.UpdateCertificate(ctx, id, fleet.CertActive); err != nil {
				return changed, fmt.Errorf("activate retiring certificate %s: %w", id, err)
			}
			return true, nil
		},
	}
}

// dropRetired removes from the item the retiring certificates past
// RetireAt + RetireKeep that this region removed already (they are no
// longer in its ledger), at the next version. Another region that has not
// removed them yet still has them in its ledger and removes them at its
// next convergence (this write's stream record is one). A lost condition
// is left to the next run.
func (r *run) dropRetired(ctx context.Context, item fleet.Device) (bool, error) {
	now := r.e.now()
	var keep []fleet.RetiringCertificate
	for _, c := range item.Retiring {
		if now.Before(c.RetireAt.Add(r.e.keep)) || contains(r.ledger.Certificates, c.CertificateID) || c.CertificateID == item.CertificateID {
			keep = append(keep, c)
		}
	}
	if len(keep) == len(item.Retiring) {
		return false, nil
	}
	if err := r.guard(ctx); err != nil {
		return false, err
	}
	next := item
	next.Retiring, next.Version, next.UpdatedAt = keep, item.Version+1, now.UTC()
	err := r.e.inv.Update(ctx, next, item.Version)
	switch {
	case errors.Is(err, fleet.ErrConditionFailed), errors.Is(err, fleet.ErrNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("drop the retired certificates of %s: %w", r.thing, err)
	}
	n := len(item.Retiring) - len(keep)
	r.e.metrics.Count("RetiredDropped", float64(n), obs.D("Function", r.o.Function))
	r.log.InfoContext(ctx, "retired certificates dropped from the item", slog.Int("count", n), slog.Int64("version", next.Version))
	return true, nil
}

// retireStep is a clearStep of a retiring certificate past its grace,
// counted as CertificatesRetired when it removes it.
func (r *run) retireStep(s saga.Step) saga.Step {
	do := s.Do
	s.Do = func(ctx context.Context) (bool, error) {
		changed, err := do(ctx)
		if err == nil && changed {
			r.e.metrics.Count("CertificatesRetired", 1, obs.D("Function", r.o.Function))
			r.log.InfoContext(ctx, "retired certificate removed")
		}
		return changed, err
	}
	return s
}

// retireDue reports whether the region (its ledger) still holds a retiring
// certificate of item whose grace has ended at now: a convergence that
// would otherwise skip as converged removes it.
func retireDue(item fleet.Device, l fleet.Ledger, now time.Time) bool {
	return slices.ContainsFunc(item.Retired(now), func(id string) bool { return contains(l.Certificates, id) })
}
