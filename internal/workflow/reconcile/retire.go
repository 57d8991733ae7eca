package reconcile

import (
	"context"
	"errors"
	"log/slog"
	"slices"

	"github.com/mriot/mriot/internal/core/fleet"
)

// retireSweepDays is how many UTC days, up to today, of the retirement
// index the retirement sweep reads: an item is indexed under the day its
// earliest retiring certificate ends its grace, and stays named in the
// item until converge.DefaultRetireKeep (a day) after that, so three days
// cover it whole.
const retireSweepDays = 3

// retirements is the retirement sweep, at every invocation after the
// revocation sweep: every device whose retiring certificate's grace has
// ended (the inventory's sparse RetirementIndex, by day) and that this
// region has not retired yet (its ledger still names the certificate) is
// checked and converged, which removes the certificate here; one whose
// retired certificate stays named past the keep is converged so that the
// entry is dropped from the item. A device retired here costs two table
// reads and no registry call.
func (p *pass) retirements(ctx context.Context) error {
	_, err := p.sweepIndex(ctx, "retirement", retireSweepDays, p.r.inv.RetiringOn, p.retireOne)
	return err
}

// retireOne checks one device with retiring certificates.
func (p *pass) retireOne(ctx context.Context, thing string) {
	var d fleet.Device
	err := p.retry(ctx, func() (err error) { d, err = p.r.inv.Get(ctx, thing); return })
	if errors.Is(err, fleet.ErrNotFound) {
		return
	}
	if err != nil {
		p.skipped(ctx, thing, err)
		return
	}
	now := p.r.now()
	due := d.Retired(now)
	if d.Status != fleet.StatusActive || len(due) == 0 {
		return // not due yet; a revoked device is the revocations' to converge
	}
	var l fleet.Lease
	err = p.retry(ctx, func() (err error) { l, err = p.r.leases.Get(ctx, thing); return })
	if err != nil && !errors.Is(err, fleet.ErrNotFound) {
		p.skipped(ctx, thing, err)
		return
	}
	pending := slices.ContainsFunc(due, func(id string) bool { return slices.Contains(l.Ledger.Certificates, id) })
	drop := slices.ContainsFunc(d.Retiring, func(c fleet.RetiringCertificate) bool {
		return !now.Before(c.RetireAt.Add(p.r.keep))
	})
	switch {
	case pending:
		p.rep.Checked++
		p.rep.Swept++
		_ = p.item(ctx, d)
	case drop:
		p.rep.Checked++
		p.rep.Swept++
		if err := p.convergeRetrying(ctx, thing); err != nil {
			p.r.log.InfoContext(ctx, "dropping retired certificates from the item failed; the next sweep tries again",
				slog.String("thingName", thing), slog.String("error", err.Error()))
		}
	}
}
