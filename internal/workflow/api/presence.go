package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
)

// Presence is the part of the presence table the API uses (see
// contract.Presence): a device's presence item, and the connected devices.
type Presence interface {
	Get(ctx context.Context, thing string) (fleet.Presence, error)
	Connected(ctx context.Context, limit int, cursor string) ([]fleet.Presence, string, error)
}

// Connection is where a device is connected now (internal/workflow/presence):
// the region of its newest session, since when, and the session's id.
type Connection struct {
	Region    string    `json:"region"`
	Since     time.Time `json:"since"`
	SessionID string    `json:"sessionId"`
}

// PresenceView is the presence part of a device's view and of a device
// summary: connected is omitted while the device is not connected, lastSeen
// is the time of the latest lifecycle event applied (connect or disconnect),
// omitted if the device was never seen.
type PresenceView struct {
	Connected *Connection `json:"connected,omitempty"`
	LastSeen  *time.Time  `json:"lastSeen,omitempty"`
}

func presenceView(p fleet.Presence) PresenceView {
	var v PresenceView
	if p.Connected {
		v.Connected = &Connection{Region: p.Region, Since: p.Since.UTC(), SessionID: p.SessionID}
	}
	if !p.LastSeen.IsZero() {
		t := p.LastSeen.UTC()
		v.LastSeen = &t
	}
	return v
}

// presenceOf reads a device's presence; a device never seen, no presence
// table, or a failed read (logged: the rest of the view is still served)
// show none.
func (h *Handler) presenceOf(ctx context.Context, name string) PresenceView {
	if h.cfg.Presence == nil {
		return PresenceView{}
	}
	p, err := h.cfg.Presence.Get(ctx, name)
	if err != nil {
		if !errors.Is(err, fleet.ErrNotFound) {
			h.log.Warn("api: presence unreadable", "thingName", name, "error", err.Error())
		}
		return PresenceView{}
	}
	return presenceView(p)
}

// listConnected serves GET /devices?connected=true: the devices connected
// now, through the presence table's sparse index, in pages with an opaque
// cursor (the presence table's, not the inventory's). Each item is the
// device's summary, read from the inventory; a connected client that is no
// device any more is left out, so a page may hold fewer than limit items.
func (h *Handler) listConnected(w http.ResponseWriter, r *http.Request) {
	if v := r.URL.Query().Get("connected"); v != "true" {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("connected=%q: only connected=true is supported", v))
		return
	}
	if h.cfg.Presence == nil {
		writeError(w, http.StatusNotImplemented, "connected=true: this API has no presence table configured")
		return
	}
	limit, err := parseLimit(r, DefaultDeviceLimit, MaxDeviceLimit)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	ps, next, err := h.cfg.Presence.Connected(r.Context(), limit, r.URL.Query().Get("cursor"))
	if err != nil {
		h.backendError(w, r, "list connected devices", err)
		return
	}
	out := DeviceList{Items: make([]DeviceSummary, 0, len(ps)), Next: next}
	for _, p := range ps {
		d, err := h.device(r.Context(), p.ThingName)
		if errors.Is(err, fleet.ErrNotFound) {
			continue
		}
		if err != nil {
			h.backendError(w, r, "list connected devices: get device "+p.ThingName, err)
			return
		}
		out.Items = append(out.Items, DeviceSummary{ThingName: d.ThingName, Status: d.Status, OriginRegion: d.OriginRegion,
			PresenceView: presenceView(p)})
	}
	writeJSON(w, http.StatusOK, out)
}
