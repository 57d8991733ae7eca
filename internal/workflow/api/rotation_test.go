package api_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/testkit/apitest"
	"github.com/mriot/mriot/internal/workflow/api"
)

// TestDeviceViewRetiring: a rotated device's record shows its retiring
// certificates (id and retireAt, never the PEM); a device without any has
// no "retiring".
func TestDeviceViewRetiring(t *testing.T) {
	f := apitest.New(t, regions)
	d := f.Onboard(t, "dev-1", map[string]apitest.Step{eu: apitest.Attached, us: apitest.Attached, ap: apitest.Attached})
	h := newHandler(t, f.Config())
	if r := do(t, h, "GET", "/devices/dev-1", ""); strings.Contains(string(r.body), `"retiring"`) {
		t.Errorf("retiring shown without a rotation: %s", r.body)
	}
	at := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	next := d
	next.Retiring = []fleet.RetiringCertificate{{CertificateID: strings.Repeat("b", 64), CertificatePEM: "SECRET-PEM", CACertificateID: d.CACertificateID, RetireAt: at}}
	next.Version++
	if err := f.Inventory.Update(context.Background(), next, d.Version); err != nil {
		t.Fatal(err)
	}
	r := do(t, h, "GET", "/devices/dev-1", "")
	var v api.DeviceView
	r.decode(t, &v)
	if len(v.Retiring) != 1 || v.Retiring[0].CertificateID != strings.Repeat("b", 64) || !v.Retiring[0].RetireAt.Equal(at) {
		t.Errorf("retiring %+v", v.Retiring)
	}
	var m map[string]any
	_ = json.Unmarshal(r.body, &m)
	got, _ := json.Marshal(m["retiring"])
	if want := `[{"certificateId":"` + strings.Repeat("b", 64) + `","retireAt":"2026-12-07T10:00:00Z"}]`; string(got) != want {
		t.Errorf("retiring JSON %s, want %s", got, want)
	}
	if strings.Contains(string(r.body), "SECRET-PEM") {
		t.Errorf("a retiring PEM leaked: %s", r.body)
	}
}
