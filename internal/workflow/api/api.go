// Package api is mriot's fleet HTTP API: one http.Handler that the API Lambda
// serves through aws-lambda-go-api-proxy (HTTP API payload v2) and that
// `mriot local` serves on --api-addr.
//
// It reads the device inventory and the data table of its own region, and the
// IoT registry of every region, so that a device's view shows whether it is
// really live everywhere. Revoke and decommission are writes to the
// inventory only: the replicate function of every region converges its
// registry from the inventory's stream. A revoke or decommission first
// writes the device's revocation record, which nothing else writes and
// nothing deletes, so that no concurrent write of the device's item in
// another region (last writer wins) can undo it.
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/workflow/reconcile"
)

// Inventory is the part of the device inventory the API uses (see
// contract.Inventory for the semantics).
type Inventory interface {
	Get(ctx context.Context, thingName string) (fleet.Device, error)
	List(ctx context.Context, limit int, cursor string) ([]fleet.Device, string, error)
	// Update replaces the item only if its stored Version is expectVersion
	// (fleet.ErrConditionFailed otherwise, fleet.ErrNotFound when absent).
	Update(ctx context.Context, d fleet.Device, expectVersion int64) error
	// Revocation returns the device's revocation record (fleet.ErrNotFound
	// when none); Revoke records one (see fleet.Revocation).
	Revocation(ctx context.Context, thingName string) (fleet.Revocation, error)
	Revoke(ctx context.Context, r fleet.Revocation) error
}

// Telemetry is the part of the data table the API uses.
type Telemetry interface {
	// Page returns up to limit messages of device older than cursor (""
	// for the newest), newest first, and the next page's cursor ("" at the
	// end); see contract.Telemetry.
	Page(ctx context.Context, device string, limit int, cursor string) ([]fleet.Message, string, error)
}

// RegionRegistry is the read side of one region's IoT registry.
type RegionRegistry interface {
	DescribeThing(ctx context.Context, name string) (fleet.Thing, error)
	DescribeCertificate(ctx context.Context, id string) (fleet.Certificate, error)
	ListThingPrincipals(ctx context.Context, thing string) ([]string, error)
	ListAttachedPolicies(ctx context.Context, principalARN string) ([]string, error)
}

// Admin controls the local stack (mriot local only). Errors wrap
// fleet.ErrNotFound (unknown region), fleet.ErrInvalid (bad PEM),
// fleet.ErrAlreadyExists (CA registered already) and fleet.ErrUnavailable
// (the region is down).
type Admin interface {
	// SetRegionDown takes a region down as an outage does (its data
	// endpoint refuses connections and the global endpoint routes
	// elsewhere, its replicas neither send nor receive replication, its
	// functions run nothing) or brings it back to catch up.
	SetRegionDown(ctx context.Context, region string, down bool) error
	// RegisterCA registers a CA certificate in region with auto-registration,
	// SNI_ONLY, ACTIVE, and returns its certificate id.
	RegisterCA(ctx context.Context, region, pem string) (string, error)
	// Reconcile runs region's reconciler through a whole pass now and
	// returns what it found and repaired.
	Reconcile(ctx context.Context, region string) (reconcile.Report, error)
	// PublishToDevice publishes payload on topic (under e/<thingName>/,
	// checked by the caller) with QoS qos from every region's data endpoint
	// that is up, as IoT's data-plane Publish would in each region, and
	// returns per region how many connected sessions it was delivered to.
	PublishToDevice(ctx context.Context, thingName, topic string, payload []byte, qos byte) (map[string]int, error)
}

// Drift reports a region's drift from the inventory without changing
// anything: a dry run of the region's reconciler, from cursor (""), looking
// at no more than maxChecks devices, things and certificates.
type Drift interface {
	Drift(ctx context.Context, region, cursor string, maxChecks int) (reconcile.Report, error)
}

// Limits of the API.
const (
	DefaultDeviceLimit    = 100
	MaxDeviceLimit        = 1000
	DefaultTelemetryLimit = 50
	MaxTelemetryLimit     = 1000
	// MaxCABody bounds the PEM body of POST /regions/{region}/ca and POST /ca.
	MaxCABody = 64 << 10
	// MaxMessageBody bounds the payload of POST
	// /devices/{thingName}/messages: IoT Core's message size limit.
	MaxMessageBody = 128 << 10
	// DefaultRegionConcurrency bounds the regions read at once for one device.
	DefaultRegionConcurrency = 8
	// DefaultDriftChecks and MaxDriftChecks bound a drift report's checks
	// (?limit=); the report's next cursor goes on.
	DefaultDriftChecks = 200
	MaxDriftChecks     = 5000
	// updateAttempts bounds the read-check-write rounds of a status change
	// that meets concurrent writers.
	updateAttempts = 5
)

// Config configures the handler.
type Config struct {
	Inventory Inventory
	Telemetry Telemetry
	// Presence is the presence table (presence.go; nil: devices show no
	// presence and GET /devices?connected=true answers 501).
	Presence Presence
	// Registries holds each region's registry.
	Registries map[string]RegionRegistry
	// Regions is the configured region order (the order of the "regions" of a
	// device view does not depend on it, JSON objects being keyed, but errors
	// and logs follow it). Empty: the sorted keys of Registries.
	Regions []string
	// DevicePolicyName is the IoT policy every device certificate must have
	// attached to be live.
	DevicePolicyName string
	// Health reports whether the service can serve (nil: always healthy).
	Health func() error
	// Admin enables the /regions admin routes (nil: they do not exist).
	Admin Admin
	// Drift enables GET /regions/{region}/drift (nil: it does not exist).
	Drift Drift
	// Logger logs one line per request (nil: discard).
	Logger *slog.Logger
	// Now is the clock of UpdatedAt (nil: time.Now).
	Now func() time.Time
	// RegionConcurrency bounds the registries read at once for one device
	// (0: DefaultRegionConcurrency).
	RegionConcurrency int
	// Commands enables the /devices/{thingName}/commands routes (nil: they
	// do not exist); see commands.go.
	Commands Commands
	// Metrics counts what the API does (nil: nothing is counted).
	Metrics obs.Metrics
}

// Handler is the fleet API.
type Handler struct {
	cfg     Config
	regions []string
	mux     *http.ServeMux
	log     *slog.Logger
}

var _ http.Handler = (*Handler)(nil)

// New checks cfg and returns the handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Inventory == nil {
		return nil, errors.New("api: no inventory configured")
	}
	if cfg.Telemetry == nil {
		return nil, errors.New("api: no telemetry table configured")
	}
	if len(cfg.Registries) == 0 {
		return nil, errors.New("api: no region registries configured")
	}
	if cfg.DevicePolicyName == "" {
		return nil, errors.New("api: no device policy name configured")
	}
	regions := slices.Clone(cfg.Regions)
	if len(regions) == 0 {
		regions = slices.Sorted(maps.Keys(cfg.Registries))
	}
	seen := map[string]bool{}
	for _, r := range regions {
		if cfg.Registries[r] == nil {
			return nil, fmt.Errorf("api: region %q has no registry", r)
		}
		if seen[r] {
			return nil, fmt.Errorf("api: region %q listed twice", r)
		}
		seen[r] = true
	}
	if len(seen) != len(cfg.Registries) {
		return nil, fmt.Errorf("api: %d registries but %d regions listed", len(cfg.Registries), len(regions))
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.RegionConcurrency <= 0 {
		cfg.RegionConcurrency = DefaultRegionConcurrency
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &Handler{cfg: cfg, regions: regions, mux: http.NewServeMux(), log: log}
	h.routes()
	return h, nil
}

func (h *Handler) routes() {
	h.mux.HandleFunc("GET /healthz", h.health)
	h.mux.HandleFunc("GET /devices", h.listDevices)
	h.mux.HandleFunc("GET /devices/{thingName}", h.getDevice)
	h.mux.HandleFunc("GET /devices/{thingName}/telemetry", h.telemetry)
	h.mux.HandleFunc("POST /devices/{thingName}/revoke", h.changeStatus(fleet.StatusRevoked))
	h.mux.HandleFunc("POST /devices/{thingName}/decommission", h.changeStatus(fleet.StatusDecommissioned))
	h.commandRoutes()
	if h.cfg.Drift != nil {
		h.mux.HandleFunc("GET /regions/{region}/drift", h.drift)
	}
	if h.cfg.Admin != nil {
		h.mux.HandleFunc("POST /regions/{region}/reconcile", h.reconcile)
		h.mux.HandleFunc("POST /regions/{region}/down", h.regionDown(true))
		h.mux.HandleFunc("POST /regions/{region}/up", h.regionDown(false))
		h.mux.HandleFunc("POST /regions/{region}/ca", h.registerCA)
		h.mux.HandleFunc("POST /ca", h.registerCAEverywhere)
		h.mux.HandleFunc("POST /devices/{thingName}/messages", h.publishToDevice)
	}
	h.mux.HandleFunc("/", h.fallback)
}

// probeMethods are the methods tried to tell 405 from 404.
var probeMethods = []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}

// fallback answers what no route matched: 405 when the path exists with
// another method, else 404, both as JSON.
func (h *Handler) fallback(w http.ResponseWriter, r *http.Request) {
	var allow []string
	for _, m := range probeMethods {
		if m == r.Method {
			continue
		}
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := h.mux.Handler(probe); pattern != "/" && pattern != "" {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		if slices.Contains(allow, http.MethodGet) {
			allow = append(allow, http.MethodHead)
		}
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s", r.Method, r.URL.Path))
		return
	}
	writeError(w, http.StatusNotFound, fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path))
}

// ServeHTTP serves the API with request logging and panic recovery.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &statusWriter{ResponseWriter: w}
	defer func() {
		if p := recover(); p != nil {
			h.log.ErrorContext(r.Context(), "api: handler panicked", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(p))
			if !rec.wrote {
				writeError(rec, http.StatusInternalServerError, "internal error")
			}
		}
		lvl := slog.LevelInfo
		if rec.status >= 500 {
			lvl = slog.LevelError
		}
		h.log.Log(r.Context(), lvl, "api request",
			"method", r.Method, "path", r.URL.Path, "query", r.URL.RawQuery,
			"status", rec.status, "durationMs", time.Since(start).Milliseconds())
	}()
	if r.RequestURI == "*" {
		// ServeMux answers "OPTIONS *" with an empty 400; answer it as JSON.
		writeError(rec, http.StatusBadRequest, "request target * is not supported")
		return
	}
	h.mux.ServeHTTP(rec, r)
}

// statusWriter records the status code written.
type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (s *statusWriter) WriteHeader(code int) {
	if !s.wrote {
		s.status, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if !s.wrote {
		s.status, s.wrote = http.StatusOK, true
	}
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
