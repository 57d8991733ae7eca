package converge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/core/saga"
)

// Step names of the convergence sagas.
const (
	StepRegister        = "register-certificate"
	StepCreateThing     = "create-thing"
	StepAttachPrincipal = "attach-principal"
	StepAttachPolicy    = "attach-policy"
	StepWriteInventory  = "write-inventory"
	StepActivate        = "activate-certificate"
	StepRevoke          = "revoke-certificate"
	StepDetach          = "detach-certificate"
	StepClear           = "clear-certificate"
	StepDeleteThing     = "delete-thing"
)

// target is the item a saga converged the region to (found=false: none).
type target struct {
	item  fleet.Device
	found bool
}

// apply converges the region to item (found=false: there is none) with one
// saga, and reports what it did and the item it converged to (the item it
// wrote, for a new device).
func (r *run) apply(ctx context.Context, item fleet.Device, found bool) (Action, target, error) {
	p := r.o.Presented
	if !found {
		if p != nil {
			d, err := r.newItem(*p)
			if err != nil {
				return "", target{}, err
			}
			act, err := r.active(ctx, d, true)
			return act, target{d, true}, err
		}
		act, err := r.absent(ctx)
		return act, target{}, err
	}
	t := target{item, true}
	switch item.Status {
	case fleet.StatusActive:
		prev, rotate := item, false
		if p != nil && p.ID != item.CertificateID {
			if _, ok := item.InGrace(p.ID, r.e.now()); !ok {
				rotated, refusal, err := r.rotation(item, *p)
				switch {
				case err != nil:
					return "", t, err
				case refusal != "":
					// Never onboarded: revoked here, under the lease, so that
					// it neither connects nor fires the event again.
					r.refused = refusal
					if _, err := r.runSaga(ctx, r.o.Function+"/"+r.e.region+"/"+r.thing+"/refused", []saga.Step{r.revokeStep(item, p.ID)}); err != nil {
						return "", t, fmt.Errorf("revoke the refused certificate %s of %s: %w", p.ID, r.thing, err)
					}
					return Refused, t, nil
				}
				item, rotate, t = rotated, true, target{rotated, true}
			}
		}
		cleared := Unchanged
		if others := r.others(item); len(others) > 0 {
			var err error
			if cleared, err = r.clearOthers(ctx, item, others); err != nil {
				return "", t, err
			}
		}
		var act Action
		var err error
		if rotate {
			act, err = r.rotate(ctx, prev, item)
		} else {
			act, err = r.active(ctx, item, false)
		}
		if err != nil {
			return "", t, err
		}
		kept, err := r.keepRetiring(ctx, item)
		if err != nil {
			return "", t, err
		}
		if _, err := r.dropRetired(ctx, item); err != nil {
			return "", t, err
		}
		return stronger(stronger(act, cleared), kept), t, nil
	case fleet.StatusRevoked:
		act, err := r.revoked(ctx, item)
		return act, t, err
	case fleet.StatusDecommissioned:
		act, err := r.decommissioned(ctx, item)
		return act, t, err
	}
	return "", t, fmt.Errorf("inventory item %s has unknown status %q: %w", item.ThingName, item.Status, fleet.ErrInvalid)
}

// newItem is the inventory item of a device onboarded with c here.
func (r *run) newItem(c fleet.Certificate) (fleet.Device, error) {
	x, err := fleet.ParseCertificatePEM(c.PEM)
	if err != nil {
		return fleet.Device{}, fmt.Errorf("certificate %s: %w", c.ID, err)
	}
	return fleet.Device{
		ThingName: r.thing, CertificateID: c.ID, CertificatePEM: c.PEM, CACertificateID: c.CACertificateID,
		NotAfter: x.NotAfter.UTC(), NotBefore: x.NotBefore.UTC(), Status: fleet.StatusActive, OriginRegion: r.e.region, Version: 1,
		UpdatedAt: r.e.now().UTC(),
	}, nil
}

// sagaID names a convergence saga: jitr's onboarding of a certificate keeps
// the id it always had; the others are named by region and certificate, so
// that a redelivery (or another function converging the same certificate)
// recognises the thing an earlier run of the same saga created.
func (r *run) sagaID(certID string) string {
	if r.o.Function == "jitr" {
		return "jitr/" + certID
	}
	return "converge/" + r.e.region + "/" + certID
}

// runSaga runs steps; the compensations that fail become obligations in the
// ledger.
func (r *run) runSaga(ctx context.Context, id string, steps []saga.Step) (saga.Result, error) {
	if r.e.mutate != nil {
		steps = r.e.mutate(steps)
	}
	res, err := r.e.runner.Run(ctx, saga.Saga{Name: r.o.Function, ID: id, Steps: steps})
	for _, u := range res.Unfinished {
		ob, ok := u.Obligation.(fleet.Obligation)
		if !ok {
			continue
		}
		ob.Saga, ob.Step, ob.Since, ob.Error = id, u.Step, r.e.now().UTC(), u.Err.Error()
		r.ledger.Obligations = append(r.ledger.Obligations, ob)
		r.e.metrics.Count("ObligationRecorded", 1, obs.D("Function", r.o.Function))
		r.log.WarnContext(ctx, "compensation failed: recorded as an obligation for the next run",
			slog.String("kind", ob.Kind), slog.String("step", u.Step), slog.String("error", ob.Error))
	}
	return res, err
}

// changed reports whether a saga changed anything.
func changed(res saga.Result) bool {
	for _, s := range res.Steps {
		if s.Changed {
			return true
		}
	}
	return false
}

// certState is what the steps of one saga learn of a certificate.
type certState struct {
	known  bool
	status fleet.CertStatus
	arn    string
}

func (s *certState) set(c fleet.Certificate) { s.known, s.status, s.arn = true, c.Status, c.ARN }

// learn records what the run knows of a certificate for its later rounds.
func (r *run) learn(c fleet.Certificate) { r.certs[c.ID] = c }

// active converges to an ACTIVE item: the certificate registered, the thing,
// the certificate attached to it, the policy attached to the certificate,
// the item written (write: jitr's new device), and the certificate ACTIVE
// last, after reading the item once more.
func (r *run) active(ctx context.Context, item fleet.Device, write bool) (Action, error) {
	return r.activeWith(ctx, item, write, nil)
}

// rotate converges to the rotated item (see active) and writes it, in
// place of the new device's item, right before activating its certificate.
func (r *run) rotate(ctx context.Context, prev, item fleet.Device) (Action, error) {
	act, err := r.activeWith(ctx, item, false, func() saga.Step { return r.rotateItemStep(prev, item) })
	if err == nil {
		r.rotated = true
		r.e.metrics.Count("CertificatesRotated", 1, obs.D("Function", r.o.Function))
	}
	return act, err
}

func (r *run) activeWith(ctx context.Context, item fleet.Device, write bool, rotation func() saga.Step) (Action, error) {
	id := r.sagaID(item.CertificateID)
	st := &certState{}
	if c, ok := r.certs[item.CertificateID]; ok {
		st.set(c)
	}
	steps := []saga.Step{
		r.registerStep(item, st),
		r.createThingStep(id),
		r.attachPrincipalStep(item.CertificateID, st),
		r.attachPolicyStep(item.CertificateID, st),
	}
	if write {
		steps = append(steps, r.writeItemStep(item))
	}
	if rotation != nil {
		steps = append(steps, rotation())
	}
	steps = append(steps, r.activateStep(item, st))
	res, err := r.runSaga(ctx, id, steps)
	if st.known {
		r.learn(fleet.Certificate{ID: item.CertificateID, ARN: st.arn, Status: st.status})
	}
	if err != nil {
		return "", fmt.Errorf("converge %s to ACTIVE: %w", r.thing, err)
	}
	r.ledger.Converged = fleet.Converged{Version: item.Version, Status: fleet.StatusActive, CertificateID: item.CertificateID}
	switch {
	case write && res.Step(StepWriteInventory).Changed:
		return Onboarded, nil
	case rotation != nil && res.Step(StepRotateInventory).Changed:
		return Rotated, nil
	case changed(res):
		return Converged, nil
	}
	return Unchanged, nil
}

// registerStep makes the item's certificate known here: noted in the ledger
// first, then registered INACTIVE from the item's PEM when this region does
// not know it (activation comes last). A certificate REVOKED here stops the
// saga: revocation wins.
func (r *run) registerStep(item fleet.Device, st *certState) saga.Step {
	id := item.CertificateID
	return saga.Step{
		Name: StepRegister,
		Do: func(ctx context.Context) (bool, error) {
			if err := r.note(ctx, id); err != nil {
				return false, err
			}
			if st.known {
				return false, nil
			}
			c, err := r.e.reg.DescribeCertificate(ctx, id)
			switch {
			case err == nil:
				st.set(c)
				if c.Status == fleet.CertRevoked {
					return false, errRevokedHere
				}
				return false, nil
			case !errors.Is(err, fleet.ErrNotFound):
				return false, fmt.Errorf("describe certificate %s: %w", id, err)
			}
			if err := checkPEM(item); err != nil {
				return false, err
			}
			if err := r.guard(ctx); err != nil {
				return false, err
			}
			c, err = r.e.reg.RegisterCertificate(ctx, item.CertificatePEM, fleet.CertInactive)
			if errors.Is(err, fleet.ErrAlreadyExists) {
				// Registered meanwhile by the device's own connection: not ours.
				if c, err = r.e.reg.DescribeCertificate(ctx, id); err != nil {
					return false, fmt.Errorf("describe certificate %s: %w", id, err)
				}
				st.set(c)
				if c.Status == fleet.CertRevoked {
					return false, errRevokedHere
				}
				return false, nil
			}
			if err != nil {
				return false, fmt.Errorf("register certificate %s: %w", id, err)
			}
			st.set(c)
			return true, nil
		},
		Undo: func(ctx context.Context) error {
			if err := r.guard(ctx); err != nil {
				return err
			}
			if err := r.e.reg.DeleteCertificate(ctx, id); err != nil && !errors.Is(err, fleet.ErrNotFound) {
				return fmt.Errorf("delete certificate %s: %w", id, err)
			}
			r.ledger = r.ledger.WithoutCertificate(id)
			return nil
		},
		Obligation: func() any {
			return fleet.Obligation{Kind: fleet.ObligationDeleteCertificate, Thing: r.thing, Certificate: id}
		},
	}
}

// checkPEM refuses an item whose PEM is not its certificate: registering it
// would put another certificate in the registry.
func checkPEM(item fleet.Device) error {
	x, err := fleet.ParseCertificatePEM(item.CertificatePEM)
	if err != nil {
		return fmt.Errorf("inventory PEM of %s: %w", item.ThingName, err)
	}
	if id := fleet.CertificateID(x); id != item.CertificateID {
		return fmt.Errorf("inventory PEM of %s is certificate %s, the item says %s: %w", item.ThingName, id, item.CertificateID, fleet.ErrInvalid)
	}
	return nil
}

// createThingStep makes the thing exist, created with ManagedBy and the
// saga id as createdBy. AWS's CreateThing succeeds again only with the same
// attributes, so of two runs racing to create it (a lease taken over from a
// run that was only slow), only the one whose call created it may undo it; a
// redelivery of the same saga recognises its own thing.
func (r *run) createThingStep(sagaID string) saga.Step {
	return saga.Step{
		Name: StepCreateThing,
		Do: func(ctx context.Context) (bool, error) {
			th, err := r.e.reg.DescribeThing(ctx, r.thing)
			switch {
			case err == nil:
				return th.Attributes[CreatedByAttribute] == sagaID, nil
			case !errors.Is(err, fleet.ErrNotFound):
				return false, fmt.Errorf("describe thing %s: %w", r.thing, err)
			}
			if err := r.guard(ctx); err != nil {
				return false, err
			}
			attrs := map[string]string{ManagedByAttribute: ManagedBy, CreatedByAttribute: sagaID}
			if _, err := r.e.reg.CreateThing(ctx, r.thing, attrs); err != nil {
				if errors.Is(err, fleet.ErrAlreadyExists) {
					return false, nil
				}
				return false, fmt.Errorf("create thing %s: %w", r.thing, err)
			}
			return true, nil
		},
		Undo: func(ctx context.Context) error {
			if err := r.guard(ctx); err != nil {
				return err
			}
			if err := r.e.reg.DeleteThing(ctx, r.thing); err != nil {
				return fmt.Errorf("delete thing %s: %w", r.thing, err)
			}
			return nil
		},
		Obligation: func() any {
			return fleet.Obligation{Kind: fleet.ObligationDeleteThing, Thing: r.thing, CreatedBy: sagaID}
		},
	}
}

func (r *run) attachPrincipalStep(certID string, st *certState) saga.Step {
	return saga.Step{
		Name: StepAttachPrincipal,
		Do: func(ctx context.Context) (bool, error) {
			prs, err := r.e.reg.ListThingPrincipals(ctx, r.thing)
			if err != nil {
				return false, fmt.Errorf("list principals of thing %s: %w", r.thing, err)
			}
			if slices.Contains(prs, st.arn) {
				return false, nil
			}
			if err := r.guard(ctx); err != nil {
				return false, err
			}
			if err := r.e.reg.AttachThingPrincipal(ctx, r.thing, st.arn); err != nil {
				return false, fmt.Errorf("attach %s to thing %s: %w", st.arn, r.thing, err)
			}
			return true, nil
		},
		Undo: func(ctx context.Context) error {
			if err := r.guard(ctx); err != nil {
				return err
			}
			if err := r.e.reg.DetachThingPrincipal(ctx, r.thing, st.arn); err != nil {
				return fmt.Errorf("detach %s from thing %s: %w", st.arn, r.thing, err)
			}
			return nil
		},
		Obligation: func() any {
			return fleet.Obligation{Kind: fleet.ObligationDetachPrincipal, Thing: r.thing, Certificate: certID, Principal: st.arn}
		},
	}
}

func (r *run) attachPolicyStep(certID string, st *certState) saga.Step {
	return saga.Step{
		Name: StepAttachPolicy,
		Do: func(ctx context.Context) (bool, error) {
			pols, err := r.e.reg.ListAttachedPolicies(ctx, st.arn)
			if err != nil {
				return false, fmt.Errorf("list policies of %s: %w", st.arn, err)
			}
			if slices.Contains(pols, r.e.policy) {
				return false, nil
			}
			if err := r.guard(ctx); err != nil {
				return false, err
			}
			if err := r.e.reg.AttachPolicy(ctx, r.e.policy, st.arn); err != nil {
				return false, fmt.Errorf("attach policy %s to %s: %w", r.e.policy, st.arn, err)
			}
			return true, nil
		},
		Undo: func(ctx context.Context) error {
			if err := r.guard(ctx); err != nil {
				return err
			}
			if err := r.e.reg.DetachPolicy(ctx, r.e.policy, st.arn); err != nil {
				return fmt.Errorf("detach policy %s from %s: %w", r.e.policy, st.arn, err)
			}
			return nil
		},
		Obligation: func() any {
			return fleet.Obligation{Kind: fleet.ObligationDetachPolicy, Thing: r.thing, Certificate: certID, Principal: st.arn, Policy: r.e.policy}
		},
	}
}

// writeItemStep records a new device in the inventory (conditional: absent,
// or the same certificate ACTIVE, written by another region onboarding it at
// the same moment). Any other item supersedes the run. The undo deletes the
// item only while it is still the one this run wrote, on that version.
func (r *run) writeItemStep(item fleet.Device) saga.Step {
	return saga.Step{
		Name: StepWriteInventory,
		Do: func(ctx context.Context) (bool, error) {
			cur, found, err := r.read(ctx)
			switch {
			case err != nil:
				return false, err
			case found && cur.CertificateID == item.CertificateID && cur.Status == fleet.StatusActive:
				return false, nil
			case found:
				return false, errItemChanged
			}
			if err := r.guard(ctx); err != nil {
				return false, err
			}
			if err := r.e.inv.Create(ctx, item); err != nil {
				if errors.Is(err, fleet.ErrConditionFailed) {
					return false, errItemChanged
				}
				return false, fmt.Errorf("write inventory of %s: %w", item.ThingName, err)
			}
			return true, nil
		},
		Undo: func(ctx context.Context) error {
			return r.deleteItemIfOurs(ctx, item.CertificateID, item.OriginRegion, item.Version)
		},
		Obligation: func() any {
			return fleet.Obligation{Kind: fleet.ObligationDeleteItem, Thing: r.thing, Certificate: item.CertificateID,
				Version: item.Version, Region: item.OriginRegion}
		},
	}
}

// deleteItemIfOurs deletes the item while it still holds certID written by
// region at version, conditionally on that version (a rewrite landing
// between the read and the delete stays).
func (r *run) deleteItemIfOurs(ctx context.Context, certID, region string, version int64) error {
	cur, found, err := r.read(ctx)
	if err != nil {
		return err
	}
	if !found || cur.CertificateID != certID || cur.OriginRegion != region || cur.Version != version {
		return nil // rewritten since by someone else: not ours any more
	}
	if err := r.guard(ctx); err != nil {
		return err
	}
	err = r.e.inv.DeleteVersion(ctx, r.thing, version)
	if err != nil && !errors.Is(err, fleet.ErrConditionFailed) {
		return fmt.Errorf("delete inventory of %s at version %d: %w", r.thing, version, err)
	}
	return nil
}

// activateStep makes the certificate ACTIVE: the moment the device gains
// access, so the item is read once more first, and a changed item
// supersedes the run. It has no compensation: every saga puts it last. That
// matters because the honest undo does not exist: AWS cannot set a
// certificate back to PENDING_ACTIVATION, and only a PENDING_ACTIVATION
// certificate makes IoT Core publish the registered event again.
func (r *run) activateStep(item fleet.Device, st *certState) saga.Step {
	id := item.CertificateID
	return saga.Step{
		Name: StepActivate,
		Do: func(ctx context.Context) (bool, error) {
			cur, found, err := r.read(ctx)
			if err != nil {
				return false, err
			}
			if !found || !same(cur, item) {
				return false, errItemChanged
			}
			if st.status == fleet.CertActive {
				return false, nil
			}
			if err := r.guard(ctx); err != nil {
				return false, err
			}
			if err := r.e.reg.UpdateCertificate(ctx, id, fleet.CertActive); err != nil {
				// AWS refuses any status change of a REVOKED certificate
				// (CertificateStateException): look before calling it terminal.
				if !fleet.IsTransient(err) {
					if c, derr := r.e.reg.DescribeCertificate(ctx, id); derr == nil && c.Status == fleet.CertRevoked {
						return false, errRevokedHere
					}
				}
				return false, fmt.Errorf("activate certificate %s: %w", id, err)
			}
			st.status = fleet.CertActive
			return true, nil
		},
	}
}

// revoked converges to a REVOKED item: the item's certificate REVOKED here
// (registered REVOKED from the item's PEM when unknown here), and every
// other certificate of the device this region knows. The thing and the
// attachments stay, for audit. Roll-forward only.
func (r *run) revoked(ctx context.Context, item fleet.Device) (Action, error) {
	steps := r.revokeSteps(item, append(slices.Clone(r.ledger.Certificates), item.CertificateIDs()...))
	res, err := r.runSaga(ctx, r.o.Function+"/"+r.e.region+"/"+r.thing+"/revoked", steps)
	if err != nil {
		return "", fmt.Errorf("converge %s to REVOKED: %w", r.thing, err)
	}
	r.ledger.Converged = fleet.Converged{Version: item.Version, Status: item.Status, CertificateID: item.CertificateID}
	if changed(res) {
		return Converged, nil
	}
	return Unchanged, nil
}

// revokeSteps revoke the item's certificate and others: first the item's,
// then the presented one and the others, sorted.
func (r *run) revokeSteps(item fleet.Device, others []string) []saga.Step {
	ids := r.revokedIDs(item, append(slices.Clone(others), r.revokedCert))
	steps := make([]saga.Step, 0, len(ids))
	for _, id := range ids {
		steps = append(steps, r.revokeStep(item, id))
	}
	return steps
}

// stepName names a step about certificate id: the item's own certificate
// gets the plain name, any other "<name>/other", so that step names (a
// metric dimension) stay few.
func stepName(name string, item fleet.Device, id string) string {
	if id == item.CertificateID {
		return name
	}
	return name + "/other"
}

// revokeStep makes certificate id REVOKED here. The item's own certificate,
// unknown here, is registered REVOKED from the item's PEM, so that nothing
// can ever activate it in this region; another certificate unknown here
// leaves the ledger.
func (r *run) revokeStep(item fleet.Device, id string) saga.Step {
	return saga.Step{
		Name: stepName(StepRevoke, item, id),
		Do: func(ctx context.Context) (bool, error) {
			delete(r.certs, id)
			c, err := r.e.reg.DescribeCertificate(ctx, id)
			switch {
			case err == nil && c.Status == fleet.CertRevoked:
				return false, nil
			case err == nil:
				if err := r.guard(ctx); err != nil {
					return false, err
				}
				if err := r.e.reg.UpdateCertificate(ctx, id, fleet.CertRevoked); err != nil {
					return false, fmt.Errorf("revoke certificate %s: %w", id, err)
				}
				return true, nil
			case !errors.Is(err, fleet.ErrNotFound):
				return false, fmt.Errorf("describe certificate %s: %w", id, err)
			case id != item.CertificateID:
				r.ledger = r.ledger.WithoutCertificate(id)
				return false, nil
			}
			if err := checkPEM(item); err != nil {
				return false, err
			}
			if err := r.note(ctx, id); err != nil {
				return false, err
			}
			if err := r.guard(ctx); err != nil {
				return false, err
			}
			_, err = r.e.reg.RegisterCertificate(ctx, item.CertificatePEM, fleet.CertRevoked)
			switch {
			case err == nil:
				return true, nil
			case errors.Is(err, fleet.ErrAlreadyExists):
				// Registered meanwhile (the device connected): revoke it.
				if err := r.e.reg.UpdateCertificate(ctx, id, fleet.CertRevoked); err != nil {
					return false, fmt.Errorf("revoke certificate %s: %w", id, err)
				}
				return true, nil
			case errors.Is(err, fleet.ErrInvalid) && !r.e.caRegistered(ctx, item.CACertificateID):
				// The device's CA is not registered here (or not ACTIVE): the
				// certificate cannot be registered, and a device cannot
				// connect here with it either.
				r.ledger = r.ledger.WithoutCertificate(id)
				r.log.WarnContext(ctx, "cannot record the revocation in this region's registry; its CA is not registered here",
					slog.String("certificateId", id), slog.String("caCertificateId", item.CACertificateID), slog.String("error", err.Error()))
				r.e.metrics.Count("RevocationNotRecorded", 1, obs.D("Function", r.o.Function))
				return false, nil
			}
			return false, fmt.Errorf("register certificate %s as REVOKED: %w", id, err)
		},
	}
}

// decommissioned converges to a DECOMMISSIONED item: every certificate of
// the device revoked first (cutting access at once), then their policies
// and the thing's principals detached, and the thing deleted. The REVOKED
// certificates stay: the registry's tombstone, which a returning device can
// never use again. Roll-forward only.
func (r *run) decommissioned(ctx context.Context, item fleet.Device) (Action, error) {
	thing, principals, err := r.thingAndPrincipals(ctx)
	if err != nil {
		return "", err
	}
	ids := append(slices.Clone(r.ledger.Certificates), item.CertificateIDs()...)
	for _, arn := range principals {
		if id := certIDFromARN(arn); id != "" {
			ids = append(ids, id)
		}
	}
	steps := r.revokeSteps(item, ids)
	for _, id := range r.revokedIDs(item, append(slices.Clone(ids), r.revokedCert)) {
		steps = append(steps, r.detachStep(item, id, thing != nil))
	}
	if thing != nil {
		steps = append(steps, r.deleteThingStep())
	}
	res, err := r.runSaga(ctx, r.o.Function+"/"+r.e.region+"/"+r.thing+"/decommissioned", steps)
	if err != nil {
		return "", fmt.Errorf("converge %s to DECOMMISSIONED: %w", r.thing, err)
	}
	r.ledger.Converged = fleet.Converged{Version: item.Version, Status: item.Status, CertificateID: item.CertificateID}
	if changed(res) {
		return Converged, nil
	}
	return Unchanged, nil
}

// revokedIDs returns the certificates revokeSteps(item, others) revoke, in
// the same order.
func (r *run) revokedIDs(item fleet.Device, others []string) []string {
	ids := []string{item.CertificateID}
	if p := r.o.Presented; p != nil {
		others = append(slices.Clone(others), p.ID)
	}
	rest := slices.Clone(others)
	slices.Sort(rest)
	for _, id := range slices.Compact(rest) {
		if id != "" && !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	return ids
}

// thingAndPrincipals reads the device's thing here (nil when absent) and the
// principals attached to it.
func (r *run) thingAndPrincipals(ctx context.Context) (*fleet.Thing, []string, error) {
	th, err := r.e.reg.DescribeThing(ctx, r.thing)
	switch {
	case errors.Is(err, fleet.ErrNotFound):
		return nil, nil, nil
	case err != nil:
		return nil, nil, fmt.Errorf("describe thing %s: %w", r.thing, err)
	}
	prs, err := r.e.reg.ListThingPrincipals(ctx, r.thing)
	if err != nil && !errors.Is(err, fleet.ErrNotFound) {
		return nil, nil, fmt.Errorf("list principals of thing %s: %w", r.thing, err)
	}
	slices.Sort(prs)
	return &th, prs, nil
}

// certIDFromARN returns the certificate id of a certificate ARN ("" for
// another principal).
func certIDFromARN(arn string) string {
	i := strings.LastIndex(arn, ":cert/")
	if i < 0 {
		return ""
	}
	return arn[i+len(":cert/"):]
}

// detachStep detaches every policy from certificate id and, with a thing,
// the certificate from the thing.
func (r *run) detachStep(item fleet.Device, id string, thing bool) saga.Step {
	return saga.Step{
		Name: stepName(StepDetach, item, id),
		Do: func(ctx context.Context) (bool, error) {
			c, err := r.e.reg.DescribeCertificate(ctx, id)
			if errors.Is(err, fleet.ErrNotFound) {
				return false, nil
			}
			if err != nil {
				return false, fmt.Errorf("describe certificate %s: %w", id, err)
			}
			return r.detach(ctx, c.ARN, thing)
		},
	}
}

// detach detaches every policy from the certificate arn and, with thing,
// the certificate from the device's thing.
func (r *run) detach(ctx context.Context, arn string, thing bool) (bool, error) {
	changed := false
	pols, err := r.e.reg.ListAttachedPolicies(ctx, arn)
	if err != nil && !errors.Is(err, fleet.ErrNotFound) {
		return false, fmt.Errorf("list policies of %s: %w", arn, err)
	}
	slices.Sort(pols)
	for _, pol := range pols {
		if err := r.guard(ctx); err != nil {
			return changed, err
		}
		if err := r.e.reg.DetachPolicy(ctx, pol, arn); err != nil && !errors.Is(err, fleet.ErrNotFound) {
			return changed, fmt.Errorf("detach policy %s from %s: %w", pol, arn, err)
		}
		changed = true
	}
	if !thing {
		return changed, nil
	}
	prs, err := r.e.reg.ListThingPrincipals(ctx, r.thing)
	if errors.Is(err, fleet.ErrNotFound) {
		return changed, nil
	}
	if err != nil {
		return changed, fmt.Errorf("list principals of thing %s: %w", r.thing, err)
	}
	if !slices.Contains(prs, arn) {
		return changed, nil
	}
	if err := r.guard(ctx); err != nil {
		return changed, err
	}
	if err := r.e.reg.DetachThingPrincipal(ctx, r.thing, arn); err != nil && !errors.Is(err, fleet.ErrNotFound) {
		return changed, fmt.Errorf("detach %s from thing %s: %w", arn, r.thing, err)
	}
	return true, nil
}

// deleteThingStep detaches whatever principals the thing still has and
// deletes it.
func (r *run) deleteThingStep() saga.Step {
	return saga.Step{
		Name: StepDeleteThing,
		Do: func(ctx context.Context) (bool, error) {
			prs, err := r.e.reg.ListThingPrincipals(ctx, r.thing)
			if errors.Is(err, fleet.ErrNotFound) {
				return false, nil
			}
			if err != nil {
				return false, fmt.Errorf("list principals of thing %s: %w", r.thing, err)
			}
			slices.Sort(prs)
			for _, arn := range prs {
				if err := r.guard(ctx); err != nil {
					return true, err
				}
				if err := r.e.reg.DetachThingPrincipal(ctx, r.thing, arn); err != nil && !errors.Is(err, fleet.ErrNotFound) {
					return true, fmt.Errorf("detach %s from thing %s: %w", arn, r.thing, err)
				}
			}
			if err := r.guard(ctx); err != nil {
				return len(prs) > 0, err
			}
			if err := r.e.reg.DeleteThing(ctx, r.thing); err != nil {
				return len(prs) > 0, fmt.Errorf("delete thing %s: %w", r.thing, err)
			}
			return true, nil
		},
	}
}

// absent converges to no item: every certificate mriot converged here for
// the device (the ledger), named by the trigger or attached to its thing is
// detached and, unless REVOKED (a tombstone) or PENDING_ACTIVATION (the
// device's own registration, which JITR handles), deactivated and deleted;
// the thing is deleted if mriot created it. Roll-forward only.
func (r *run) absent(ctx context.Context) (Action, error) {
	thing, principals, err := r.thingAndPrincipals(ctx)
	if err != nil {
		return "", err
	}
	ids := slices.Clone(r.ledger.Certificates)
	ids = append(ids, r.o.Hints...)
	for _, arn := range principals {
		if id := certIDFromARN(arn); id != "" {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	var steps []saga.Step
	for _, id := range ids {
		if id != "" {
			steps = append(steps, r.clearStep(id, thing != nil))
		}
	}
	if thing != nil && managed(*thing) {
		steps = append(steps, r.deleteThingStep())
	}
	r.ledger.Converged = fleet.Converged{}
	if len(steps) == 0 {
		return Unchanged, nil
	}
	res, err := r.runSaga(ctx, r.o.Function+"/"+r.e.region+"/"+r.thing+"/removed", steps)
	if err != nil {
		return "", fmt.Errorf("remove %s: %w", r.thing, err)
	}
	if changed(res) {
		return Converged, nil
	}
	return Unchanged, nil
}

// others are the certificates of the device, other than the ACTIVE item's,
// that this region knows (the ledger) or the trigger names (hints): left
// over from an earlier item, or from a lost race.
func (r *run) others(item fleet.Device) []string {
	var out []string
	now := r.e.now()
	for _, id := range slices.Concat(r.ledger.Certificates, r.o.Hints, item.Retired(now)) {
		if _, graced := item.InGrace(id, now); graced {
			continue // a retiring certificate in its grace: kept (keepRetiring)
		}
		if id != "" && id != item.CertificateID && !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// clearOthers removes the other certificates of an ACTIVE device (see
// clearStep): only the item's certificate may give the device access.
// Roll-forward only.
func (r *run) clearOthers(ctx context.Context, item fleet.Device, ids []string) (Action, error) {
	thing, _, err := r.thingAndPrincipals(ctx)
	if err != nil {
		return "", err
	}
	steps := make([]saga.Step, 0, len(ids))
	retired := item.Retired(r.e.now())
	for _, id := range ids {
		step := r.clearStep(id, thing != nil)
		if slices.Contains(retired, id) {
			step = r.retireStep(step)
		}
		steps = append(steps, step)
	}
	res, err := r.runSaga(ctx, r.o.Function+"/"+r.e.region+"/"+r.thing+"/others", steps)
	if err != nil {
		return "", fmt.Errorf("clear other certificates of %s: %w", r.thing, err)
	}
	if changed(res) {
		return Converged, nil
	}
	return Unchanged, nil
}

// managed reports whether mriot created the thing.
func managed(th fleet.Thing) bool {
	return th.Attributes[ManagedByAttribute] == ManagedBy || th.Attributes[CreatedByAttribute] != ""
}

// clearStep removes certificate id of a device that has no item.
func (r *run) clearStep(id string, thing bool) saga.Step {
	return saga.Step{
		Name: StepClear,
		Do: func(ctx context.Context) (bool, error) {
			delete(r.certs, id)
			c, err := r.e.reg.DescribeCertificate(ctx, id)
			if errors.Is(err, fleet.ErrNotFound) {
				r.ledger = r.ledger.WithoutCertificate(id)
				return false, nil
			}
			if err != nil {
				return false, fmt.Errorf("describe certificate %s: %w", id, err)
			}
			changed, err := r.detach(ctx, c.ARN, thing)
			if err != nil {
				return changed, err
			}
			switch c.Status {
			case fleet.CertRevoked, fleet.CertPendingActivation:
				return changed, nil
			case fleet.CertActive:
				if err := r.guard(ctx); err != nil {
					return changed, err
				}
				if err := r.e.reg.UpdateCertificate(ctx, id, fleet.CertInactive); err != nil {
					return changed, fmt.Errorf("deactivate certificate %s: %w", id, err)
				}
				changed = true
			}
			if err := r.guard(ctx); err != nil {
				return changed, err
			}
			if err := r.e.reg.DeleteCertificate(ctx, id); err != nil && !errors.Is(err, fleet.ErrNotFound) {
				return true, fmt.Errorf("delete certificate %s: %w", id, err)
			}
			r.ledger = r.ledger.WithoutCertificate(id)
			return true, nil
		},
	}
}
