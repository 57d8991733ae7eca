package api

import (
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
)

// RetiringView is one retiring certificate of a device record: a previous
// certificate that stays valid until RetireAt, then is removed everywhere.
type RetiringView struct {
	CertificateID string    `json:"certificateId"`
	RetireAt      time.Time `json:"retireAt"`
}

// retiringViews are d's retiring certificates (nil when none).
func retiringViews(d fleet.Device) []RetiringView {
	var out []RetiringView
	for _, r := range d.Retiring {
		out = append(out, RetiringView{CertificateID: r.CertificateID, RetireAt: r.RetireAt.UTC()})
	}
	return out
}
