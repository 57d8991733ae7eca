package api

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/mriot/mriot/internal/core/fleet"
)

// The local stack's admin routes beyond the per-region ones: POST /ca and
// POST /devices/{thingName}/messages.

// CARegistration is one region's part of the answer of POST /ca.
type CARegistration struct {
	// Status is "registered", "already registered" or "failed".
	Status          string `json:"status"`
	CACertificateID string `json:"caCertificateId,omitempty"`
	Error           string `json:"error,omitempty"`
}

// CA registration statuses.
const (
	CARegistered        = "registered"
	CAAlreadyRegistered = "already registered"
	CAFailed            = "failed"
)

// CARegistrations is the body of POST /ca: the CA's id and what each region
// answered. Error is set when some region failed (the status is then that
// region's error status).
type CARegistrations struct {
	CACertificateID string                    `json:"caCertificateId"`
	Regions         map[string]CARegistration `json:"regions"`
	Error           string                    `json:"error,omitempty"`
}

// DownlinkResult is the body of POST /devices/{thingName}/messages.
type DownlinkResult struct {
	Topic string `json:"topic"`
	QoS   int    `json:"qos"`
	// Sessions is how many connected sessions got the message, all regions
	// together; Regions says it per region that is up.
	Sessions int            `json:"sessions"`
	Regions  map[string]int `json:"regions"`
}

// Limits of IoT Core's topics, which a downlink topic must respect.
const (
	MaxTopicBytes   = 256
	MaxTopicSlashes = 7
)

// readCA reads and checks the PEM body of a CA registration; on a bad body
// it answers 400 or 413 and returns false.
func (h *Handler) readCA(w http.ResponseWriter, r *http.Request) (string, *x509.Certificate, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxCABody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("CA certificate body is larger than %d bytes", MaxCABody))
			return "", nil, false
		}
		writeError(w, http.StatusBadRequest, "read body: "+err.Error())
		return "", nil, false
	}
	cert, err := fleet.ParseCertificatePEM(string(body))
	if err != nil {
		h.log.Warn("api: bad CA certificate", "path", r.URL.Path, "error", err.Error())
		writeError(w, http.StatusBadRequest, "CA certificate: "+err.Error())
		return "", nil, false
	}
	return string(body), cert, true
}

// registerCAEverywhere answers POST /ca (the local stack): the CA is
// registered in every region, as devices that the global endpoint may send
// to any region need. A region that has it already counts as done, so the
// call can be repeated (after a region that was down is back). 201 when
// some region registered it now, 200 when every region had it; otherwise
// the status of the first region that failed, with every region's answer.
func (h *Handler) registerCAEverywhere(w http.ResponseWriter, r *http.Request) {
	body, cert, ok := h.readCA(w, r)
	if !ok {
		return
	}
	out := CARegistrations{CACertificateID: fleet.CertificateID(cert), Regions: make(map[string]CARegistration, len(h.regions))}
	status := http.StatusOK
	var failures []string
	for _, region := range h.regions {
		id, err := h.cfg.Admin.RegisterCA(r.Context(), region, body)
		switch {
		case err == nil:
			out.Regions[region] = CARegistration{Status: CARegistered, CACertificateID: id}
			if status == http.StatusOK {
				status = http.StatusCreated
			}
		case errors.Is(err, fleet.ErrAlreadyExists):
			out.Regions[region] = CARegistration{Status: CAAlreadyRegistered, CACertificateID: out.CACertificateID}
		default:
			out.Regions[region] = CARegistration{Status: CAFailed, Error: err.Error()}
			if failures == nil {
				status = errorStatus(err)
			}
			failures = append(failures, region+": "+err.Error())
			h.log.Warn("api: register CA certificate failed", "region", region, "caCertificateId", out.CACertificateID, "error", err.Error())
		}
	}
	if failures != nil {
		out.Error = fmt.Sprintf("CA certificate registered in %d of %d regions (repeat POST /ca once the cause is gone); %s",
			len(h.regions)-len(failures), len(h.regions), strings.Join(failures, "; "))
	}
	h.log.Info("api: CA certificate registered in every region", "caCertificateId", out.CACertificateID, "failed", len(failures))
	writeJSON(w, status, out)
}

// checkDownlinkTopic checks a downlink topic: under e/<thing>/, the only
// topics the device policy lets a device receive, and a topic IoT Core
// accepts for a publish.
func checkDownlinkTopic(thing, topic string) error {
	prefix := "e/" + thing + "/"
	switch {
	case topic == "":
		return fmt.Errorf("the topic query parameter is required, e.g. ?topic=%scmd", prefix)
	case !strings.HasPrefix(topic, prefix) || len(topic) == len(prefix):
		return fmt.Errorf("topic %q is not under %s: the device policy lets %s subscribe to and receive only topics under %s", topic, prefix, thing, prefix)
	case strings.ContainsAny(topic, "+#"):
		return fmt.Errorf("topic %q has a wildcard (+ or #): a message is published on one topic", topic)
	case !utf8.ValidString(topic) || strings.ContainsRune(topic, 0):
		return fmt.Errorf("topic %q is not valid UTF-8 without NUL", topic)
	case len(topic) > MaxTopicBytes:
		return fmt.Errorf("topic is %d bytes, IoT Core allows %d", len(topic), MaxTopicBytes)
	case strings.Count(topic, "/") > MaxTopicSlashes:
		return fmt.Errorf("topic %q has %d slashes, IoT Core allows %d", topic, strings.Count(topic, "/"), MaxTopicSlashes)
	}
	return nil
}

// publishToDevice answers POST /devices/{thingName}/messages?topic=&qos=
// (the local stack): the body is published on the topic in every region's
// data endpoint, so that the device gets it wherever it is connected.
// 202 with the sessions reached; 400 for a topic outside e/<thing>/ or a
// bad qos, 404 for a device the inventory does not know, 413 for a payload
// above IoT Core's 128 KB.
func (h *Handler) publishToDevice(w http.ResponseWriter, r *http.Request) {
	name, ok := h.thingName(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	topic := q.Get("topic")
	if err := checkDownlinkTopic(name, topic); err != nil {
		h.log.Warn("api: bad downlink topic", "thingName", name, "error", err.Error())
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var qos byte
	switch q.Get("qos") {
	case "", "0":
	case "1":
		qos = 1
	default:
		h.log.Warn("api: bad downlink qos", "thingName", name, "qos", q.Get("qos"))
		writeError(w, http.StatusBadRequest, fmt.Sprintf("qos %q: want 0 or 1 (IoT Core has no QoS 2)", q.Get("qos")))
		return
	}
	payload, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxMessageBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("message is larger than IoT Core's %d bytes", MaxMessageBody))
			return
		}
		writeError(w, http.StatusBadRequest, "read body: "+err.Error())
		return
	}
	if _, err := h.cfg.Inventory.Get(r.Context(), name); err != nil {
		h.backendError(w, r, "get device "+name, err)
		return
	}
	regions, err := h.cfg.Admin.PublishToDevice(r.Context(), name, topic, payload, qos)
	if err != nil {
		h.backendError(w, r, "publish to "+name+" on "+topic, err)
		return
	}
	out := DownlinkResult{Topic: topic, QoS: int(qos), Regions: regions}
	for _, n := range regions {
		out.Sessions += n
	}
	h.log.Info("api: message published to device", "thingName", name, "topic", topic, "bytes", len(payload), "sessions", out.Sessions)
	writeJSON(w, http.StatusAccepted, out)
}
