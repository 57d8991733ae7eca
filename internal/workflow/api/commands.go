package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/core/obs"
)

// Commands is the part of the commands table the API uses (see
// contract.Commands).
type Commands interface {
	Create(ctx context.Context, c fleet.Command) error
	Get(ctx context.Context, thing, id string) (fleet.Command, error)
	Page(ctx context.Context, thing string, limit int, cursor string) ([]fleet.Command, string, error)
}

// Limits of the commands routes.
const (
	DefaultCommandTTL   = 24 * time.Hour
	MaxCommandTTL       = 7 * 24 * time.Hour
	DefaultCommandLimit = 50
	MaxCommandLimit     = 500
	// maxCommandBody bounds the body of POST /devices/{thingName}/commands:
	// the payload's limit and room for the envelope.
	maxCommandBody = fleet.MaxCommandPayload + 1024
)

// CommandRequest is the body of POST /devices/{thingName}/commands.
type CommandRequest struct {
	// Payload is any JSON value (required; null is no payload).
	Payload json.RawMessage `json:"payload"`
	// TTLSeconds is how long the command may wait for its device (default
	// 86400, at most 604800).
	TTLSeconds *int `json:"ttlSeconds,omitempty"`
}

// CommandView is a command as the API shows it.
type CommandView struct {
	ID         string              `json:"id"`
	ThingName  string              `json:"thingName"`
	Payload    json.RawMessage     `json:"payload"`
	Status     fleet.CommandStatus `json:"status"`
	CreatedAt  time.Time           `json:"createdAt"`
	ExpiresAt  time.Time           `json:"expiresAt"`
	SentAt     *time.Time          `json:"sentAt,omitempty"`
	SentRegion string              `json:"sentRegion,omitempty"`
	Deliveries int                 `json:"deliveries,omitempty"`
	AckedAt    *time.Time          `json:"ackedAt,omitempty"`
}

// CommandList is the body of GET /devices/{thingName}/commands.
type CommandList struct {
	Items []CommandView `json:"items"`
	// Next is the cursor of the page of older commands, absent at the end.
	Next string `json:"next,omitempty"`
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// commandView shows c as of now: a command past its expiry that is not
// ACKED is EXPIRED.
func commandView(c fleet.Command, now time.Time) CommandView {
	return CommandView{ID: c.ID, ThingName: c.ThingName, Payload: rawJSON(c.Payload), Status: c.Effective(now),
		CreatedAt: c.CreatedAt, ExpiresAt: c.ExpiresAt, SentAt: optTime(c.SentAt), SentRegion: c.SentRegion,
		Deliveries: c.Deliveries, AckedAt: optTime(c.AckedAt)}
}

func (h *Handler) commandRoutes() {
	if h.cfg.Commands == nil {
		return
	}
	h.mux.HandleFunc("POST /devices/{thingName}/commands", h.postCommand)
	h.mux.HandleFunc("GET /devices/{thingName}/commands", h.listCommands)
	h.mux.HandleFunc("GET /devices/{thingName}/commands/{id}", h.getCommand)
}

func (h *Handler) metrics() obs.Metrics {
	if h.cfg.Metrics == nil {
		return obs.Nop{}
	}
	return h.cfg.Metrics
}

// readCommand reads and checks the body of a new command; on a bad body
// it answers 400 and returns false.
func (h *Handler) readCommand(w http.ResponseWriter, r *http.Request) (json.RawMessage, time.Duration, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxCommandBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("command body is larger than %d bytes", maxCommandBody))
			return nil, 0, false
		}
		writeError(w, http.StatusBadRequest, "read body: "+err.Error())
		return nil, 0, false
	}
	var req CommandRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		h.log.Warn("api: bad command body", "path", r.URL.Path, "error", err.Error())
		writeError(w, http.StatusBadRequest, "command body: "+err.Error())
		return nil, 0, false
	}
	if dec.More() {
		writeError(w, http.StatusBadRequest, "command body: more than one JSON value")
		return nil, 0, false
	}
	payload := bytes.TrimSpace(req.Payload)
	if len(payload) == 0 || bytes.Equal(payload, []byte("null")) {
		writeError(w, http.StatusBadRequest, "command body: payload is required (any JSON value but null)")
		return nil, 0, false
	}
	if len(payload) > fleet.MaxCommandPayload {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("command payload is %d bytes, more than %d", len(payload), fleet.MaxCommandPayload))
		return nil, 0, false
	}
	ttl := DefaultCommandTTL
	if req.TTLSeconds != nil {
		ttl = time.Duration(*req.TTLSeconds) * time.Second
		if *req.TTLSeconds < 1 || ttl > MaxCommandTTL {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("ttlSeconds %d must be from 1 to %d", *req.TTLSeconds, int(MaxCommandTTL/time.Second)))
			return nil, 0, false
		}
	}
	return payload, ttl, true
}

// postCommand answers POST /devices/{thingName}/commands: the command is
// stored QUEUED, and the commands function of the region the device is
// connected in delivers it (now, or when it connects).
func (h *Handler) postCommand(w http.ResponseWriter, r *http.Request) {
	name, ok := h.thingName(w, r)
	if !ok {
		return
	}
	payload, ttl, ok := h.readCommand(w, r)
	if !ok {
		return
	}
	d, err := h.device(r.Context(), name)
	if err != nil {
		h.backendError(w, r, "get device "+name, err)
		return
	}
	if d.Status != fleet.StatusActive {
		writeError(w, http.StatusConflict, fmt.Sprintf("device %s is %s: it takes no commands", name, d.Status))
		return
	}
	now := h.cfg.Now().UTC()
	c := fleet.Command{ThingName: name, ID: fleet.NewCommandID(now), Payload: payload, Status: fleet.CommandQueued,
		CreatedAt: now.Truncate(time.Millisecond), ExpiresAt: now.Add(ttl).Truncate(time.Millisecond), Version: 1}
	if err := h.cfg.Commands.Create(r.Context(), c); err != nil {
		h.backendError(w, r, "create command", err)
		return
	}
	h.metrics().Count("Queued", 1, obs.D("Function", "api"))
	h.log.Info("api: command queued", "device", name, "commandId", c.ID, "expiresAt", c.ExpiresAt)
	writeJSON(w, http.StatusAccepted, commandView(c, now))
}

func (h *Handler) listCommands(w http.ResponseWriter, r *http.Request) {
	name, ok := h.thingName(w, r)
	if !ok {
		return
	}
	limit, err := parseLimit(r, DefaultCommandLimit, MaxCommandLimit)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	cmds, next, err := h.cfg.Commands.Page(r.Context(), name, limit, r.URL.Query().Get("cursor"))
	if err != nil {
		h.backendError(w, r, "list commands of "+name, err)
		return
	}
	now := h.cfg.Now()
	out := CommandList{Items: make([]CommandView, 0, len(cmds)), Next: next}
	for _, c := range cmds {
		out.Items = append(out.Items, commandView(c, now))
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *Handler) getCommand(w http.ResponseWriter, r *http.Request) {
	name, ok := h.thingName(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	if err := fleet.ValidateCommandID(id); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	c, err := h.cfg.Commands.Get(r.Context(), name, id)
	if err != nil {
		h.backendError(w, r, "get command "+id, err)
		return
	}
	writeJSON(w, http.StatusOK, commandView(c, h.cfg.Now()))
}
