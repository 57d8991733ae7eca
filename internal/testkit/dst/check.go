package dst

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/mriot/mriot/internal/aws/ddbitem"
	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/workflow/converge"
)

// monitor watches the system while it runs: when a revocation reached each
// region, and when each certificate was ACTIVE where.
type monitor struct {
	s *Sim
	// restricted: when a region's replica first showed the device's item
	// REVOKED or DECOMMISSIONED.
	restricted map[[2]string]time.Time
	// active: ACTIVE intervals of a device's certificate in a region.
	active map[[2]string][]interval
	// downs: each region's outages.
	downs map[string][]interval
	// connected: when a device connected where (for the trace).
	connections int
	// holder: who holds a device's lease in a region.
	holder map[[2]string]holding
	// activations: when a device's certificate became ACTIVE in a region.
	activations map[[2]string][]time.Time
	// violations found while running.
	violations []string
}

type interval struct{ from, to time.Time } // to zero: still open

func newMonitor(s *Sim) *monitor {
	return &monitor{s: s, restricted: map[[2]string]time.Time{}, active: map[[2]string][]interval{}, downs: map[string][]interval{},
		holder: map[[2]string]holding{}, activations: map[[2]string][]time.Time{}}
}

// registryChanged looks at every device's certificate in r after a
// registry call: a run's, or the console's (console: someone behind the
// system's back, whose activation is drift for the system to undo within
// the bound, not an activation by the system).
func (m *monitor) registryChanged(r *region, op string, console bool) {
	switch op {
	case "UpdateCertificate", "RegisterCertificate", "DeleteCertificate":
	default:
		return
	}
	for _, d := range m.s.devices {
		isActive := false
		for _, id := range d.ids() {
			c, ok := r.reg.CertificateByID(id)
			isActive = isActive || ok && c.Status == fleet.CertActive
		}
		k := [2]string{r.name, d.name}
		iv := m.active[k]
		open := len(iv) > 0 && iv[len(iv)-1].to.IsZero()
		switch {
		case isActive && !open:
			m.active[k] = append(iv, interval{from: m.s.now})
			if !console {
				m.activations[k] = append(m.activations[k], m.s.now)
			}
			m.s.log("monitor %s ACTIVE in %s", d.name, r.name)
		case !isActive && open:
			iv[len(iv)-1].to = m.s.now
			m.s.log("monitor %s not ACTIVE in %s", d.name, r.name)
		}
	}
}

// streamRecord notes when a revocation reached a region's replica.
func (m *monitor) streamRecord(r *region, rec events.DynamoDBEventRecord) {
	st, ok := rec.Change.NewImage[ddbitem.AttrStatus]
	if !ok {
		return
	}
	switch fleet.Status(st.String()) {
	case fleet.StatusRevoked, fleet.StatusDecommissioned:
	default:
		return
	}
	thing, _ := ddbitem.IsRevocationKey(rec.Change.Keys[ddbitem.AttrThingName].String())
	k := [2]string{r.name, thing}
	if _, seen := m.restricted[k]; !seen {
		m.restricted[k] = m.s.now
	}
}

func (m *monitor) connected(r *region, d *device) { m.connections++ }

// upTimeBetween is how much of [from, to] region was up.
func (m *monitor) upTimeBetween(region string, from, to time.Time) time.Duration {
	d := to.Sub(from)
	for _, o := range m.downs[region] {
		end := o.to
		if end.IsZero() {
			end = to
		}
		lo, hi := maxTime(from, o.from), minTime(to, end)
		if hi.After(lo) {
			d -= hi.Sub(lo)
		}
	}
	return d
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// effective reads a device as its item and its revocation record say in
// region r (what every workflow converges to).
func (s *Sim) effective(ctx context.Context, r *region, name string) (fleet.Device, bool, error) {
	d, err := r.inv.Get(ctx, name)
	found := err == nil
	if err != nil && !errors.Is(err, fleet.ErrNotFound) {
		return d, false, err
	}
	rev, err := r.inv.Revocation(ctx, name)
	if err != nil && !errors.Is(err, fleet.ErrNotFound) {
		return d, false, err
	}
	d, found = fleet.Effective(d, found, rev, err == nil)
	return d, found, nil
}

// check verifies the invariants at quiescence and returns the violations.
func (s *Sim) check() []string {
	ctx := context.Background()
	v := append([]string(nil), s.mon.violations...)
	bad := func(format string, args ...any) { v = append(v, fmt.Sprintf(format, args...)) }
	// The replicas agree (replication has drained).
	items := map[string]fleet.Device{}
	for i, r := range s.regions {
		for _, d := range s.devices {
			it, found, err := s.effective(ctx, r, d.name)
			switch {
			case err != nil:
				bad("%s: read item in %s: %v", d.name, r.name, err)
				continue
			case !found:
				if _, ok := items[d.name]; ok && i > 0 {
					bad("%s: no item in %s, but one in %s", d.name, r.name, s.regions[0].name)
				}
				continue
			}
			if i == 0 {
				items[d.name] = it
			} else if prev, ok := items[d.name]; !ok || prev.Version != it.Version || prev.Status != it.Status || prev.CertificateID != it.CertificateID {
				bad("%s: replicas disagree: %s has %s v%d", d.name, r.name, it.Status, it.Version)
			}
		}
	}
	for _, d := range s.devices {
		it, ok := items[d.name]
		for _, r := range s.regions {
			current := d.id
			if ok && slices.Contains(d.ids(), it.CertificateID) {
				current = it.CertificateID // a rotation's current certificate
			}
			c, certOK := r.reg.CertificateByID(current)
			_, thingErr := r.reg.DescribeThing(ctx, d.name)
			thing := thingErr == nil
			switch {
			case ok && it.Status == fleet.StatusActive:
				// I1: an ACTIVE item's device is live in every region.
				if !certOK || c.Status != fleet.CertActive || !thing ||
					!slices.Contains(r.reg.ThingsForPrincipal(c.ARN), d.name) || len(r.reg.PoliciesForPrincipal(c.ARN)) == 0 {
					bad("I1 %s ACTIVE v%d but not live in %s (certificate %q, thing %v)", d.name, it.Version, r.name, c.Status, thing)
				}
			case ok:
				// I2: a REVOKED or DECOMMISSIONED item's certificate is not
				// ACTIVE anywhere; I3: a DECOMMISSIONED device has no thing.
				for _, id := range d.ids() {
					if c, certOK := r.reg.CertificateByID(id); certOK && c.Status == fleet.CertActive {
						bad("I2 %s is %s but its certificate %s is ACTIVE in %s", d.name, it.Status, short(id), r.name)
					}
				}
				if it.Status == fleet.StatusDecommissioned && thing {
					bad("I3 %s is DECOMMISSIONED but has a thing in %s", d.name, r.name)
				}
			default:
				// I4: no item, so nothing mriot made for it may be left
				// (a REVOKED certificate is the record of a revocation; a
				// PENDING_ACTIVATION one is the device's own registration).
				if certOK && c.Status != fleet.CertRevoked && c.Status != fleet.CertPendingActivation {
					bad("I4 %s has no item but its certificate is %s in %s", d.name, c.Status, r.name)
				}
			}
			if !ok && thing {
				bad("I4 %s has no item but a thing in %s", d.name, r.name)
			}
			if ok && !slices.Contains(d.ids(), it.CertificateID) {
				bad("%s: item holds certificate %s, not the device's", d.name, short(it.CertificateID))
			}
		}
		// I7: what the operator was told (202) holds.
		if d.doomed && (!ok || !fleet.Restricts(it.Status, d.doom)) {
			bad("I7 the operator's %s of %s was accepted but it is %s", d.doom, d.name, it.Status)
		}
		// I2': once the revocation reached a region, the certificate was
		// not activated there any more (but by a run that checked the item
		// right before: activation follows its check by a call or two), and
		// was not ACTIVE there for longer than the bound (up time).
		for _, r := range s.regions {
			at, seen := s.mon.restricted[[2]string{r.name, d.name}]
			if !seen {
				continue
			}
			for _, act := range s.mon.activations[[2]string{r.name, d.name}] {
				if act.Sub(at) > time.Second {
					bad("I2'' %s activated in %s at %s, %s after its revocation reached it", d.name, r.name, act.Sub(Epoch), act.Sub(at))
				}
			}
			for _, iv := range s.mon.active[[2]string{r.name, d.name}] {
				end := iv.to
				if end.IsZero() {
					end = s.now
				}
				if !end.After(at) {
					continue
				}
				over := s.mon.upTimeBetween(r.name, maxTime(at, iv.from), end)
				if over > s.Overhang {
					s.Overhang = over
				}
				if over > s.cfg.Bound {
					bad("I2' %s ACTIVE in %s for %s of up time after its revocation reached it (bound %s)", d.name, r.name, over.Round(time.Millisecond), s.cfg.Bound)
				}
			}
		}
	}
	// I4 for things: no mriot-created thing without an item.
	for _, r := range s.regions {
		things, _, err := r.reg.ListThings(ctx, converge.ManagedByAttribute, converge.ManagedBy, 250, "")
		if err != nil {
			bad("list things in %s: %v", r.name, err)
			continue
		}
		for _, th := range things {
			if _, ok := items[th.Name]; !ok {
				bad("I4 thing %s in %s has no item", th.Name, r.name)
			}
		}
	}
	// I5: every telemetry message a region accepted is stored, everywhere.
	for _, m := range s.accepted {
		for _, r := range s.regions {
			item, err := r.dataT.GetItem(ctx, ddbitem.MessageKey(m.device, fleet.SortKey(m.ts, m.id)))
			switch {
			case err != nil:
				bad("I5 read message %s/%s in %s: %v", m.device, m.id, r.name, err)
			case item == nil:
				bad("I5 message %s/%s accepted but not stored in %s", m.device, m.id, r.name)
			}
		}
	}
	// I6: no lease held, no obligation left, nothing dead-lettered after
	// the redrive.
	for _, r := range s.regions {
		for _, it := range r.leaseT.Snapshot() {
			l, err := ddbitem.UnmarshalLease(it)
			if err != nil {
				continue // the reconciler's position
			}
			if l.Owner != "" && s.now.Before(l.Until) {
				bad("I6 lease of %s in %s still held by %s", l.ThingName, r.name, l.Owner)
			}
			if len(l.Ledger.Obligations) > 0 {
				bad("I6 %d obligations of %s left in %s", len(l.Ledger.Obligations), l.ThingName, r.name)
			}
		}
	}
	for _, d := range s.dlq {
		bad("I6 %s in %s dead-lettered after the redrive: %s", d.fn, d.region, d.err)
	}
	if s.cfg.Rotation.Grace > 0 {
		v = append(v, s.checkRotation(items)...)
	}
	return v
}
