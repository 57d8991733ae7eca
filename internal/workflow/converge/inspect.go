package converge

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/mriot/mriot/internal/core/fleet"
)

// Drift kinds: how a region's registry differs from what convergence to an
// inventory item would make of it. They are the Kind dimension of the
// reconciler's DriftFound and DriftRepaired metrics.
const (
	// An ACTIVE item.
	DriftThingMissing           = "thing_missing"
	DriftCertificateMissing     = "certificate_missing"
	DriftCertificateNotActive   = "certificate_not_active"
	DriftPrincipalDetached      = "principal_detached"
	DriftPolicyDetached         = "policy_detached"
	DriftCertificateRevokedHere = "certificate_revoked_here" // revocation wins: the item becomes REVOKED
	// A REVOKED or DECOMMISSIONED item.
	DriftRevocationNotRecorded = "revocation_not_recorded"
	DriftCertificateNotRevoked = "certificate_not_revoked"
	// A DECOMMISSIONED item.
	DriftThingNotRemoved   = "thing_not_removed"
	DriftPolicyNotDetached = "policy_not_detached"
	// An ACTIVE item's retiring certificates: one in its grace not usable
	// here (missing, not ACTIVE, detached), one past it not removed.
	DriftRetiringNotActive = "retiring_not_active"
	DriftRetiredNotRemoved = "retired_not_removed"
)

// Inspect reports, without changing anything, how this region's registry
// differs from what convergence to item would make of it (no kinds: in
// place). It reads the thing, the item's certificate and their attachments.
func (e *Engine) Inspect(ctx context.Context, item fleet.Device) ([]string, error) {
	var drift []string
	_, err := e.reg.DescribeThing(ctx, item.ThingName)
	thing := err == nil
	if err != nil && !errors.Is(err, fleet.ErrNotFound) {
		return nil, fmt.Errorf("describe thing %s: %w", item.ThingName, err)
	}
	c, err := e.reg.DescribeCertificate(ctx, item.CertificateID)
	cert := err == nil
	if err != nil && !errors.Is(err, fleet.ErrNotFound) {
		return nil, fmt.Errorf("describe certificate %s: %w", item.CertificateID, err)
	}
	var principals, policies []string
	if thing {
		if principals, err = e.reg.ListThingPrincipals(ctx, item.ThingName); err != nil && !errors.Is(err, fleet.ErrNotFound) {
			return nil, fmt.Errorf("list principals of thing %s: %w", item.ThingName, err)
		}
	}
	if cert {
		if policies, err = e.reg.ListAttachedPolicies(ctx, c.ARN); err != nil && !errors.Is(err, fleet.ErrNotFound) {
			return nil, fmt.Errorf("list policies of %s: %w", c.ARN, err)
		}
	}
	switch item.Status {
	case fleet.StatusActive:
		switch {
		case !cert:
			drift = append(drift, DriftCertificateMissing)
		case c.Status == fleet.CertRevoked:
			drift = append(drift, DriftCertificateRevokedHere)
		case c.Status != fleet.CertActive:
			drift = append(drift, DriftCertificateNotActive)
		}
		if !thing {
			drift = append(drift, DriftThingMissing)
		} else if cert && !slices.Contains(principals, c.ARN) {
			drift = append(drift, DriftPrincipalDetached)
		}
		if cert && !slices.Contains(policies, e.policy) {
			drift = append(drift, DriftPolicyDetached)
		}
		more, err := e.inspectRetiring(ctx, item, principals)
		if err != nil {
			return nil, err
		}
		drift = append(drift, more...)
	case fleet.StatusRevoked, fleet.StatusDecommissioned:
		switch {
		case !cert:
			// Unknown here: recorded as REVOKED unless the CA is not
			// registered here (then nothing can connect with it here).
			if e.caRegistered(ctx, item.CACertificateID) {
				drift = append(drift, DriftRevocationNotRecorded)
			}
		case c.Status != fleet.CertRevoked:
			drift = append(drift, DriftCertificateNotRevoked)
		}
		if item.Status == fleet.StatusDecommissioned {
			if thing {
				drift = append(drift, DriftThingNotRemoved)
			}
			if len(policies) > 0 {
				drift = append(drift, DriftPolicyNotDetached)
			}
		}
	default:
		return nil, fmt.Errorf("inventory item %s has unknown status %q: %w", item.ThingName, item.Status, fleet.ErrInvalid)
	}
	return drift, nil
}

// caRegistered reports whether a CA certificate is registered and ACTIVE
// here; a failure to read it counts as registered.
func (e *Engine) caRegistered(ctx context.Context, id string) bool {
	ca, err := e.reg.DescribeCACertificate(ctx, id)
	if errors.Is(err, fleet.ErrNotFound) {
		return false
	}
	return err != nil || ca.Status == fleet.CertActive
}

// inspectRetiring reports the drift of an ACTIVE item's retiring
// certificates: one in its grace must be ACTIVE, attached to the thing and
// with the policy; one past it must be gone (or REVOKED, or
// PENDING_ACTIVATION: the device's own registration, which jitr refuses).
func (e *Engine) inspectRetiring(ctx context.Context, item fleet.Device, principals []string) ([]string, error) {
	now := e.now()
	var drift []string
	for _, rc := range item.Retiring {
		if rc.CertificateID == item.CertificateID {
			continue
		}
		c, err := e.reg.DescribeCertificate(ctx, rc.CertificateID)
		known := err == nil
		if err != nil && !errors.Is(err, fleet.ErrNotFound) {
			return nil, fmt.Errorf("describe certificate %s: %w", rc.CertificateID, err)
		}
		if now.Before(rc.RetireAt) {
			if !known || c.Status == fleet.CertRevoked {
				if !known && !slices.Contains(drift, DriftRetiringNotActive) && e.caRegistered(ctx, rc.CACertificateID) {
					drift = append(drift, DriftRetiringNotActive)
				}
				continue
			}
			ok := c.Status == fleet.CertActive && slices.Contains(principals, c.ARN)
			if ok {
				pols, err := e.reg.ListAttachedPolicies(ctx, c.ARN)
				if err != nil && !errors.Is(err, fleet.ErrNotFound) {
					return nil, fmt.Errorf("list policies of %s: %w", c.ARN, err)
				}
				ok = slices.Contains(pols, e.policy)
			}
			if !ok && !slices.Contains(drift, DriftRetiringNotActive) {
				drift = append(drift, DriftRetiringNotActive)
			}
			continue
		}
		if known && c.Status != fleet.CertRevoked && c.Status != fleet.CertPendingActivation && !slices.Contains(drift, DriftRetiredNotRemoved) {
			drift = append(drift, DriftRetiredNotRemoved)
		}
	}
	return drift, nil
}
