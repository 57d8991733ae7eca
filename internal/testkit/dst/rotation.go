package dst

import (
	"context"
	_ "embed"
	"fmt"
	"strings"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
)

// The rotation scenario's PKI (testdata/rotation.pem): a second
// auto-registration CA, then for each device a renewed certificate and an
// older one, alternately.
var (
	//go:embed testdata/rotation.pem
	rotationPEM string
	// renewedNotBefore and olderNotBefore frame the devices' own
	// certificates' NotBefore (2025-01-01).
	renewedNotBefore = time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	olderNotBefore   = time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC)
)

// rotationPKI splits rotationPEM: the CA, the renewed and the older
// certificates by device index.
func rotationPKI() (ca string, renewed, older []string, err error) {
	pems := strings.SplitAfter(rotationPEM, "-----END CERTIFICATE-----\n")
	if len(pems) < 3 {
		return "", nil, nil, fmt.Errorf("rotation fixture: %d certificates", len(pems)-1)
	}
	ca = pems[0]
	rest := pems[1 : len(pems)-1]
	for i := 0; i+1 < len(rest); i += 2 {
		renewed = append(renewed, rest[i])
		older = append(older, rest[i+1])
	}
	return ca, renewed, older, nil
}

// Rotation is the certificate rotation scenario: some devices renew their
// certificate while the system runs and connect with the renewed one (now
// and then with the previous one, and once with one issued before it).
type Rotation struct {
	// Grace is the rotation grace (ROTATION_GRACE); zero: no rotation.
	Grace time.Duration
	// Share of the devices that renew (default a half).
	Share float64
}

// rotating is a device's certificates in the rotation scenario.
type rotating struct {
	caID                string // the renewals' CA
	renewedPEM, renewed string
	olderPEM, older     string
	// switched: the device renewed and uses the renewed certificate.
	switched   bool
	olderTried bool
}

// ids are every certificate of the device: its own, and in the rotation
// scenario the renewed and the older ones.
func (d *device) ids() []string {
	if d.rot == nil {
		return []string{d.id}
	}
	return []string{d.id, d.rot.renewed, d.rot.older}
}

// newRotation registers the renewals' CA everywhere and gives each device
// its renewed and older certificates.
func (s *Sim) newRotation() error {
	ctx := context.Background()
	ca, renewed, older, err := rotationPKI()
	if err != nil {
		return err
	}
	x, err := fleet.ParseCertificatePEM(ca)
	if err != nil {
		return fmt.Errorf("rotation CA: %w", err)
	}
	caID := fleet.CertificateID(x)
	for _, r := range s.regions {
		if _, err := r.reg.RegisterCACertificate(ctx, ca, true); err != nil {
			return err
		}
	}
	for i, d := range s.devices {
		rx, err := fleet.ParseCertificatePEM(renewed[i])
		if err != nil {
			return err
		}
		ox, err := fleet.ParseCertificatePEM(older[i])
		if err != nil {
			return err
		}
		d.rot = &rotating{caID: caID, renewedPEM: renewed[i], renewed: fleet.CertificateID(rx), olderPEM: older[i], older: fleet.CertificateID(ox)}
	}
	return nil
}

// startRotation schedules the renewals, and the watch of the retirement
// bound.
func (s *Sim) startRotation() {
	share := s.cfg.Rotation.Share
	if share == 0 {
		share = 0.5
	}
	for _, d := range s.devices {
		if !s.chance(share) {
			continue
		}
		s.after(s.between(s.cfg.Active/4, s.cfg.Active/2), "renew "+d.name, func() {
			s.log("device %s renews its certificate: %s", d.name, short(d.rot.renewed))
			d.rot.switched = true
		})
	}
	s.after(30*time.Second, "rotation watch", s.watchRotation)
}

// presented is the certificate d presents at a connection: its own until
// it renews, then mostly the renewed one, now and then its previous one
// (a device may use either during the grace, and a stale configuration
// keeps using the old one after it), and once one issued before both.
func (s *Sim) presented(d *device) (pemText, id, caID string) {
	r := d.rot
	switch {
	case !r.switched:
		return d.pem, d.id, d.ca
	case !r.olderTried && s.chance(0.1):
		r.olderTried = true
		s.log("device %s presents an older certificate %s", d.name, short(r.older))
		return r.olderPEM, r.older, r.caID
	case s.chance(0.15):
		return d.pem, d.id, d.ca
	}
	return r.renewedPEM, r.renewed, r.caID
}

// watchRotation checks, every 30 s while the system is active, the
// retirement bound: no certificate whose grace ended (as the region's
// replica says) more than the bound (of the region's up time) ago is ACTIVE
// there.
func (s *Sim) watchRotation() {
	if !s.active {
		return
	}
	s.mon.violations = append(s.mon.violations, s.retiredActive(false)...)
	s.after(30*time.Second, "rotation watch", s.watchRotation)
}

// retiredActive lists the certificates past their grace plus the bound
// that are ACTIVE in a region (final: at quiescence, where every region
// was reconciled until nothing was left: past their grace at all).
func (s *Sim) retiredActive(final bool) []string {
	ctx := context.Background()
	var v []string
	for _, r := range s.regions {
		if r.down {
			continue
		}
		for _, d := range s.devices {
			it, err := r.inv.Get(ctx, d.name)
			if err != nil || it.Status != fleet.StatusActive {
				continue
			}
			for _, rc := range it.Retiring {
				if !s.now.After(rc.RetireAt) {
					continue
				}
				if !final && s.mon.upTimeBetween(r.name, rc.RetireAt, s.now) <= s.cfg.Bound {
					continue
				}
				if c, ok := r.reg.CertificateByID(rc.CertificateID); ok && c.Status == fleet.CertActive {
					v = append(v, fmt.Sprintf("R1 %s: certificate %s retired at %s still ACTIVE in %s at %s", d.name, short(rc.CertificateID),
						rc.RetireAt.Sub(Epoch), r.name, s.now.Sub(Epoch)))
				}
			}
		}
	}
	return v
}

// checkRotation is the rotation scenario's invariants at quiescence, over
// the items every replica agrees on:
//
//   - R1: no certificate past its grace is ACTIVE anywhere (along the way:
//     not past its grace plus the bound, watchRotation);
//   - R2: an ACTIVE device has one current certificate: every region
//     converged to it (I1 checks the item's current certificate live
//     everywhere), the only other ACTIVE certificates of the device in any
//     region are its retiring ones in their grace, and a device that
//     renewed holds its renewed certificate (the newest wins). (The
//     ledger's Converged is a hint, not checked: a run whose lease release
//     failed leaves it behind while the registry is converged.)
//   - R3 (with I2, I2', I2” over every certificate of the device): a
//     revoked or decommissioned device's certificates, retiring ones
//     included, are ACTIVE nowhere.
func (s *Sim) checkRotation(items map[string]fleet.Device) []string {
	v := s.retiredActive(true)
	for _, d := range s.devices {
		it, ok := items[d.name]
		if !ok || it.Status != fleet.StatusActive {
			continue
		}
		if d.rot.switched && it.CertificateID != d.rot.renewed {
			v = append(v, fmt.Sprintf("R2 %s renewed its certificate but the item holds %s, not %s", d.name, short(it.CertificateID), short(d.rot.renewed)))
		}
		for _, r := range s.regions {
			for _, id := range d.ids() {
				c, ok := r.reg.CertificateByID(id)
				if !ok || c.Status != fleet.CertActive || id == it.CertificateID {
					continue
				}
				if _, graced := it.InGrace(id, s.now); !graced {
					v = append(v, fmt.Sprintf("R2 %s: certificate %s ACTIVE in %s, neither current (%s) nor in its grace", d.name, short(id), r.name, short(it.CertificateID)))
				}
			}
		}
	}
	return v
}

// noRetirement is an inventory whose rotated-out certificates never end
// their grace: every reader sees RetireAt a century later.
type noRetirement struct{ inventoryPort }

func (n noRetirement) Get(ctx context.Context, thing string) (fleet.Device, error) {
	d, err := n.inventoryPort.Get(ctx, thing)
	for i := range d.Retiring {
		d.Retiring[i].RetireAt = d.Retiring[i].RetireAt.AddDate(100, 0, 0)
	}
	return d, err
}
