package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
)

// DeviceSummary is one item of GET /devices.
type DeviceSummary struct {
	ThingName    string       `json:"thingName"`
	Status       fleet.Status `json:"status"`
	OriginRegion string       `json:"originRegion"`
	PresenceView              // connected (GET /devices?connected=true only)
}

// DeviceList is the body of GET /devices.
type DeviceList struct {
	Items []DeviceSummary `json:"items"`
	// Next is the cursor of the next page, absent at the end.
	Next string `json:"next,omitempty"`
}

// DeviceRecord is a device's inventory record as the API shows it (the
// body of a status change).
type DeviceRecord struct {
	ThingName     string       `json:"thingName"`
	Status        fleet.Status `json:"status"`
	CertificateID string       `json:"certificateId"`
	OriginRegion  string       `json:"originRegion"`
	Version       int64        `json:"version"`
	UpdatedAt     time.Time    `json:"updatedAt"`
	// Retiring are the previous certificates of a rotation, valid until
	// their retireAt (absent when none).
	Retiring []RetiringView `json:"retiring,omitempty"`
}

// RegionView is what one region's registry holds of a device.
type RegionView struct {
	Thing bool `json:"thing"`
	// CertificateStatus is empty when the certificate is not registered there.
	CertificateStatus fleet.CertStatus `json:"certificateStatus"`
	PrincipalAttached bool             `json:"principalAttached"`
	PolicyAttached    bool             `json:"policyAttached"`
	// Error is set when the region's registry could not be read.
	Error string `json:"error,omitempty"`
}

// Live reports whether the device can connect and publish in that region.
func (v RegionView) Live() bool {
	return v.Error == "" && v.Thing && v.CertificateStatus == fleet.CertActive && v.PrincipalAttached && v.PolicyAttached
}

// DeviceView is the body of GET /devices/{thingName}.
type DeviceView struct {
	DeviceRecord
	Regions map[string]RegionView `json:"regions"`
	// Live: every region shows the thing, the ACTIVE certificate, the
	// principal and the policy attached.
	Live bool `json:"live"`
	PresenceView
}

// TelemetryItem is one message of GET /devices/{thingName}/telemetry.
type TelemetryItem struct {
	Device  string          `json:"device"`
	TS      int64           `json:"ts"`
	Region  string          `json:"region"`
	Message json.RawMessage `json:"message"`
}

// TelemetryList is the body of GET /devices/{thingName}/telemetry.
type TelemetryList struct {
	Items []TelemetryItem `json:"items"`
	// Next is the cursor of the page of older messages, absent at the end.
	Next string `json:"next,omitempty"`
}

// ErrorBody is the body of every error response.
type ErrorBody struct {
	Error string `json:"error"`
}

func record(d fleet.Device) DeviceRecord {
	return DeviceRecord{
		ThingName: d.ThingName, Status: d.Status, CertificateID: d.CertificateID,
		OriginRegion: d.OriginRegion, Version: d.Version, UpdatedAt: d.UpdatedAt, Retiring: retiringViews(d),
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(ErrorBody{Error: "encode response: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, ErrorBody{Error: msg})
}

// backendError answers a failed port call: 404, 400, 409, 503 or 500 by the
// error's sentinel, and logs it.
func (h *Handler) backendError(w http.ResponseWriter, r *http.Request, what string, err error) {
	status := errorStatus(err)
	lvl := h.log.Warn
	if status >= 500 {
		lvl = h.log.Error
	}
	lvl("api: "+what+" failed", "path", r.URL.Path, "status", status, "error", err.Error())
	// The port's error often says what was asked already ("get device X:
	// not found"): say it once.
	msg := err.Error()
	if !strings.HasPrefix(msg, what+": ") {
		msg = what + ": " + msg
	}
	writeError(w, status, msg)
}

// errorStatus is the HTTP status of a failed port call, by the error's
// sentinel.
func errorStatus(err error) int {
	switch {
	case errors.Is(err, fleet.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, fleet.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, fleet.ErrAlreadyExists), errors.Is(err, fleet.ErrConditionFailed):
		return http.StatusConflict
	case fleet.IsTransient(err), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// thingName reads and checks the {thingName} path value; on a bad name it
// answers 400 and returns false.
func (h *Handler) thingName(w http.ResponseWriter, r *http.Request) (string, bool) {
	name := r.PathValue("thingName")
	if err := fleet.ValidateThingName(name); err != nil {
		h.log.Warn("api: bad thing name", "path", r.URL.Path, "error", err.Error())
		writeError(w, http.StatusBadRequest, err.Error())
		return "", false
	}
	return name, true
}

// parseLimit reads ?limit= within [1, max] (def when absent).
func parseLimit(r *http.Request, def, max int) (int, error) {
	q := r.URL.Query()
	if !q.Has("limit") {
		return def, nil
	}
	s := q.Get("limit")
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > max {
		return 0, fmt.Errorf("limit %q must be an integer from 1 to %d", s, max)
	}
	return n, nil
}

func (h *Handler) health(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Health != nil {
		if err := h.cfg.Health(); err != nil {
			h.log.Warn("api: unhealthy", "error", err.Error())
			writeError(w, http.StatusServiceUnavailable, "unhealthy: "+err.Error())
			return
		}
	}
	writeJSON(w, http.StatusOK, Health{Status: "ok", Regions: h.regions})
}

// Health is the body of GET /healthz: the status, and the regions the API
// serves.
type Health struct {
	Status  string   `json:"status"`
	Regions []string `json:"regions"`
}

func (h *Handler) listDevices(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Has("connected") {
		h.listConnected(w, r) // presence.go
		return
	}
	limit, err := parseLimit(r, DefaultDeviceLimit, MaxDeviceLimit)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	devs, next, err := h.cfg.Inventory.List(r.Context(), limit, r.URL.Query().Get("cursor"))
	if err != nil {
		h.backendError(w, r, "list devices", err)
		return
	}
	out := DeviceList{Items: make([]DeviceSummary, 0, len(devs)), Next: next}
	for _, d := range devs {
		out.Items = append(out.Items, DeviceSummary{ThingName: d.ThingName, Status: d.Status, OriginRegion: d.OriginRegion})
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *Handler) getDevice(w http.ResponseWriter, r *http.Request) {
	name, ok := h.thingName(w, r)
	if !ok {
		return
	}
	d, err := h.device(r.Context(), name)
	if err != nil {
		h.backendError(w, r, "get device "+name, err)
		return
	}
	view := DeviceView{DeviceRecord: record(d), Regions: h.regionViews(r.Context(), d), PresenceView: h.presenceOf(r.Context(), name)}
	view.Live = true
	for _, region := range h.regions {
		if !view.Regions[region].Live() {
			view.Live = false
		}
	}
	writeJSON(w, http.StatusOK, view)
}

// device reads a device as its item and its revocation record say
// (fleet.Effective): a revocation record restricts it whatever the item
// says. A device with a record but no item is shown from the record.
func (h *Handler) device(ctx context.Context, name string) (fleet.Device, error) {
	d, err := h.cfg.Inventory.Get(ctx, name)
	found := err == nil
	if err != nil && !errors.Is(err, fleet.ErrNotFound) {
		return fleet.Device{}, err
	}
	rev, rerr := h.cfg.Inventory.Revocation(ctx, name)
	if rerr != nil && !errors.Is(rerr, fleet.ErrNotFound) {
		return fleet.Device{}, rerr
	}
	d, found = fleet.Effective(d, found, rev, rerr == nil)
	if !found {
		return fleet.Device{}, err
	}
	return d, nil
}

// regionViews reads every region's registry, at most RegionConcurrency at once.
func (h *Handler) regionViews(ctx context.Context, d fleet.Device) map[string]RegionView {
	views := make([]RegionView, len(h.regions))
	sem := make(chan struct{}, h.cfg.RegionConcurrency)
	var wg sync.WaitGroup
	for i, region := range h.regions {
		wg.Go(func() {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				views[i] = RegionView{Error: fmt.Sprintf("read registry of %s: %v", region, ctx.Err())}
				return
			}
			defer func() { <-sem }()
			v, err := h.regionView(ctx, h.cfg.Registries[region], d)
			if err != nil {
				h.log.Warn("api: region registry unreadable", "region", region, "thingName", d.ThingName, "error", err.Error())
				v.Error = err.Error()
			}
			views[i] = v
		})
	}
	wg.Wait()
	out := make(map[string]RegionView, len(h.regions))
	for i, region := range h.regions {
		out[region] = views[i]
	}
	return out
}

// regionView reads one region's registry. Absent resources are false or
// empty; any other error stops the reading and is returned with what was
// read so far.
func (h *Handler) regionView(ctx context.Context, reg RegionRegistry, d fleet.Device) (RegionView, error) {
	var v RegionView
	_, err := reg.DescribeThing(ctx, d.ThingName)
	switch {
	case err == nil:
		v.Thing = true
	case !errors.Is(err, fleet.ErrNotFound):
		return v, fmt.Errorf("describe thing %s: %w", d.ThingName, err)
	}
	if d.CertificateID == "" {
		return v, nil
	}
	cert, err := reg.DescribeCertificate(ctx, d.CertificateID)
	switch {
	case errors.Is(err, fleet.ErrNotFound):
		return v, nil
	case err != nil:
		return v, fmt.Errorf("describe certificate %s: %w", d.CertificateID, err)
	}
	v.CertificateStatus = cert.Status
	if v.Thing {
		prs, err := reg.ListThingPrincipals(ctx, d.ThingName)
		switch {
		case err == nil:
			v.PrincipalAttached = slices.Contains(prs, cert.ARN)
		case errors.Is(err, fleet.ErrNotFound):
			// The thing went away between the two calls.
			v.Thing = false
		default:
			return v, fmt.Errorf("list principals of %s: %w", d.ThingName, err)
		}
	}
	pols, err := reg.ListAttachedPolicies(ctx, cert.ARN)
	switch {
	case err == nil:
		v.PolicyAttached = slices.Contains(pols, h.cfg.DevicePolicyName)
	case errors.Is(err, fleet.ErrNotFound):
		// The certificate went away between the two calls.
		v.CertificateStatus, v.PrincipalAttached = "", false
	default:
		return v, fmt.Errorf("list policies of %s: %w", cert.ARN, err)
	}
	return v, nil
}

func (h *Handler) telemetry(w http.ResponseWriter, r *http.Request) {
	name, ok := h.thingName(w, r)
	if !ok {
		return
	}
	limit, err := parseLimit(r, DefaultTelemetryLimit, MaxTelemetryLimit)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	since, err := parseSince(r.URL.Query().Get("since"), h.cfg.Now())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	msgs, next, err := h.cfg.Telemetry.Page(r.Context(), name, limit, r.URL.Query().Get("cursor"))
	if err != nil {
		h.backendError(w, r, "query telemetry of "+name, err)
		return
	}
	out := TelemetryList{Items: make([]TelemetryItem, 0, len(msgs)), Next: next}
	for _, m := range msgs {
		if m.Timestamp < since {
			// Newest first: every later message, and every later page, is
			// older still.
			out.Next = ""
			break
		}
		out.Items = append(out.Items, TelemetryItem{Device: m.Device, TS: m.Timestamp, Region: m.Region, Message: rawJSON(m.Payload)})
	}
	writeJSON(w, http.StatusOK, out)
}

// parseSince reads the telemetry query's since: an RFC 3339 time, epoch
// milliseconds (the messages' own ts), or a Go duration back from now
// ("15m"). Empty: no bound (0).
func parseSince(s string, now time.Time) (int64, error) {
	if s == "" {
		return 0, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UnixMilli(), nil
	}
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil && ms >= 0 {
		return ms, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-d).UnixMilli(), nil
	}
	return 0, fmt.Errorf("since %q: want an RFC 3339 time, epoch milliseconds or a positive duration such as 15m: %w", s, fleet.ErrInvalid)
}

// rawJSON passes a stored message on as it is when it is JSON, and as a JSON
// string otherwise (the data table should hold JSON only, but a malformed
// item must not break the whole response).
func rawJSON(b []byte) json.RawMessage {
	if len(b) > 0 && json.Valid(b) {
		return json.RawMessage(b)
	}
	s, _ := json.Marshal(string(b))
	return s
}

// allowed reports whether a device may go from status from to status to.
// Same status: idempotent. Anything may be decommissioned; a decommissioned
// device (a tombstone) changes no more.
func allowed(from, to fleet.Status) bool {
	switch to {
	case fleet.StatusRevoked:
		return from == fleet.StatusActive || from == fleet.StatusRevoked
	case fleet.StatusDecommissioned:
		return from == fleet.StatusActive || from == fleet.StatusRevoked || from == fleet.StatusDecommissioned
	}
	return false
}

func (h *Handler) changeStatus(to fleet.Status) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name, ok := h.thingName(w, r)
		if !ok {
			return
		}
		ctx := r.Context()
		// recorded: this request wrote the revocation record. The record's
		// own stream run may then catch the item up before this request's
		// update does; the device did change because of this request, so
		// the answer is still 202, not the 200 of "it already was".
		recorded := false
		for attempt := 1; ; attempt++ {
			d, err := h.cfg.Inventory.Get(ctx, name)
			if err != nil {
				h.backendError(w, r, "get device "+name, err)
				return
			}
			rev, rerr := h.cfg.Inventory.Revocation(ctx, name)
			if rerr != nil && !errors.Is(rerr, fleet.ErrNotFound) {
				h.backendError(w, r, "get the revocation of "+name, rerr)
				return
			}
			eff, _ := fleet.Effective(d, true, rev, rerr == nil)
			if d.Status == to && eff.Status == to {
				code := http.StatusOK
				if recorded {
					code = http.StatusAccepted
				}
				writeJSON(w, code, record(d))
				return
			}
			if !allowed(eff.Status, to) {
				h.log.Warn("api: status change refused", "thingName", name, "from", eff.Status, "to", to)
				writeError(w, http.StatusConflict, fmt.Sprintf("device %s is %s and cannot become %s", name, eff.Status, to))
				return
			}
			// The revocation record first: once it is written, the device
			// is restricted whatever happens to its item.
			rec := fleet.Revocation{ThingName: name, Status: to, CertificateID: d.CertificateID, CertificatePEM: d.CertificatePEM,
				CACertificateID: d.CACertificateID, UpdatedAt: h.cfg.Now().UTC()}
			if err := h.cfg.Inventory.Revoke(ctx, rec); err != nil {
				h.backendError(w, r, "record the revocation of "+name, err)
				return
			}
			recorded = true
			prev := d.Version
			d.Status, d.Version, d.UpdatedAt = to, prev+1, h.cfg.Now().UTC()
			err = h.cfg.Inventory.Update(ctx, d, prev)
			if err == nil {
				h.log.Info("api: device status changed", "thingName", name, "status", to, "version", d.Version)
				writeJSON(w, http.StatusAccepted, record(d))
				return
			}
			if errors.Is(err, fleet.ErrConditionFailed) && attempt == updateAttempts {
				// The revocation record holds: the device is restricted, and
				// the convergence catches its item up with the record.
				h.log.Warn("api: device item not updated after concurrent writes; its revocation record holds",
					"thingName", name, "status", to, "attempts", attempt)
				d.Status, d.Version = to, prev
				writeJSON(w, http.StatusAccepted, record(d))
				return
			}
			if !errors.Is(err, fleet.ErrConditionFailed) {
				h.backendError(w, r, fmt.Sprintf("set %s to %s (attempt %d)", name, to, attempt), err)
				return
			}
			h.log.Info("api: concurrent update, retrying", "thingName", name, "attempt", attempt)
		}
	}
}

func (h *Handler) knownRegion(w http.ResponseWriter, r *http.Request) (string, bool) {
	region := r.PathValue("region")
	if !slices.Contains(h.regions, region) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown region %q", region))
		return "", false
	}
	return region, true
}

func (h *Handler) regionDown(down bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		region, ok := h.knownRegion(w, r)
		if !ok {
			return
		}
		if err := h.cfg.Admin.SetRegionDown(r.Context(), region, down); err != nil {
			h.backendError(w, r, "set region "+region+" state", err)
			return
		}
		state := "up"
		if down {
			state = "down"
		}
		h.log.Info("api: region marked "+state, "region", region)
		writeJSON(w, http.StatusOK, map[string]string{"region": region, "state": state})
	}
}

func (h *Handler) registerCA(w http.ResponseWriter, r *http.Request) {
	region, ok := h.knownRegion(w, r)
	if !ok {
		return
	}
	body, _, ok := h.readCA(w, r)
	if !ok {
		return
	}
	id, err := h.cfg.Admin.RegisterCA(r.Context(), region, body)
	if err != nil {
		h.backendError(w, r, "register CA certificate in "+region, err)
		return
	}
	h.log.Info("api: CA certificate registered", "region", region, "caCertificateId", id)
	writeJSON(w, http.StatusCreated, map[string]string{"caCertificateId": id})
}

// drift answers GET /regions/{region}/drift[?cursor=&limit=]: what the
// region's reconciler would change (a dry run), a page at a time.
func (h *Handler) drift(w http.ResponseWriter, r *http.Request) {
	region, ok := h.knownRegion(w, r)
	if !ok {
		return
	}
	limit, err := parseLimit(r, DefaultDriftChecks, MaxDriftChecks)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	rep, err := h.cfg.Drift.Drift(r.Context(), region, r.URL.Query().Get("cursor"), limit)
	if err != nil {
		h.backendError(w, r, "drift report of "+region, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

// reconcile answers POST /regions/{region}/reconcile (the local stack): a
// whole pass of the region's reconciler, now.
func (h *Handler) reconcile(w http.ResponseWriter, r *http.Request) {
	region, ok := h.knownRegion(w, r)
	if !ok {
		return
	}
	rep, err := h.cfg.Admin.Reconcile(r.Context(), region)
	if err != nil {
		h.backendError(w, r, "reconcile "+region, err)
		return
	}
	h.log.Info("api: region reconciled", "region", region, "findings", len(rep.Findings), "unrepaired", rep.Unrepaired())
	writeJSON(w, http.StatusOK, rep)
}
