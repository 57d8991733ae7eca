package dst

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/fake/memiot"
)

// watched is a region's registry as the functions see it: the fake, with
// every mutating call attributed to the device it changes and the run that
// makes it, so that the monitor can check that one run at a time changes a
// device's resources in a region.
type watched struct {
	*memiot.Registry
	s *Sim
	r *region
}

// touch checks that the running task, which changes device in w's region,
// holds the device's lease there (one writer per device per region).
func (w watched) touch(device string) {
	s := w.s
	if s.cur == nil || device == "" {
		return
	}
	h, ok := s.mon.holder[[2]string{w.r.name, device}]
	if !ok || h.task != s.cur || !s.now.Before(h.until) {
		holder := "nobody"
		if ok {
			holder = h.task.name
		}
		s.mon.violations = append(s.mon.violations, fmt.Sprintf("I8 %s changed %s in %s at %s without its lease (held by %s)",
			s.cur.name, device, w.r.name, s.now.Sub(Epoch), holder))
	}
}

// holding is who holds a device's lease in a region, as the lease table
// answered.
type holding struct {
	task  *task
	until time.Time
}

// watchedLeases records who holds which lease, for touch.
type watchedLeases struct {
	leasesPort
	s *Sim
	r *region
}

func (l watchedLeases) Acquire(ctx context.Context, thing, owner string, now, until time.Time) (fleet.Lease, error) {
	le, err := l.leasesPort.Acquire(ctx, thing, owner, now, until)
	if err == nil && l.s.cur != nil {
		l.s.mon.holder[[2]string{l.r.name, thing}] = holding{task: l.s.cur, until: le.Until}
	}
	return le, err
}

func (l watchedLeases) Renew(ctx context.Context, le fleet.Lease, until time.Time) (fleet.Lease, error) {
	out, err := l.leasesPort.Renew(ctx, le, until)
	k := [2]string{l.r.name, le.ThingName}
	if h, ok := l.s.mon.holder[k]; err == nil && ok && h.task == l.s.cur {
		l.s.mon.holder[k] = holding{task: h.task, until: out.Until}
	}
	return out, err
}

func (l watchedLeases) Release(ctx context.Context, le fleet.Lease, ledger fleet.Ledger) error {
	k := [2]string{l.r.name, le.ThingName}
	if h, ok := l.s.mon.holder[k]; ok && h.task == l.s.cur {
		delete(l.s.mon.holder, k)
	}
	return l.leasesPort.Release(ctx, le, ledger)
}

// byCert is the device of a certificate id (the simulation's devices).
func (w watched) byCert(id string) string {
	for _, d := range w.s.devices {
		if slices.Contains(d.ids(), id) {
			return d.name
		}
	}
	return ""
}

func (w watched) byARN(arn string) string {
	if i := strings.LastIndex(arn, "/"); i >= 0 {
		return w.byCert(arn[i+1:])
	}
	return ""
}

func (w watched) RegisterCertificate(ctx context.Context, pem string, status fleet.CertStatus) (fleet.Certificate, error) {
	if x, err := fleet.ParseCertificatePEM(pem); err == nil {
		w.touch(w.byCert(fleet.CertificateID(x)))
	}
	return w.Registry.RegisterCertificate(ctx, pem, status)
}

func (w watched) UpdateCertificate(ctx context.Context, id string, status fleet.CertStatus) error {
	w.touch(w.byCert(id))
	return w.Registry.UpdateCertificate(ctx, id, status)
}

func (w watched) DeleteCertificate(ctx context.Context, id string) error {
	w.touch(w.byCert(id))
	return w.Registry.DeleteCertificate(ctx, id)
}

func (w watched) CreateThing(ctx context.Context, name string, attrs map[string]string) (fleet.Thing, error) {
	w.touch(name)
	return w.Registry.CreateThing(ctx, name, attrs)
}

func (w watched) DeleteThing(ctx context.Context, name string) error {
	w.touch(name)
	return w.Registry.DeleteThing(ctx, name)
}

func (w watched) AttachThingPrincipal(ctx context.Context, thing, principal string) error {
	w.touch(thing)
	return w.Registry.AttachThingPrincipal(ctx, thing, principal)
}

func (w watched) DetachThingPrincipal(ctx context.Context, thing, principal string) error {
	w.touch(thing)
	return w.Registry.DetachThingPrincipal(ctx, thing, principal)
}

func (w watched) AttachPolicy(ctx context.Context, policy, principal string) error {
	w.touch(w.byARN(principal))
	return w.Registry.AttachPolicy(ctx, policy, principal)
}

func (w watched) DetachPolicy(ctx context.Context, policy, principal string) error {
	w.touch(w.byARN(principal))
	return w.Registry.DetachPolicy(ctx, policy, principal)
}
