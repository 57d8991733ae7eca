package broker

import (
	"encoding/json"
	"errors"
	"net"
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/emulator/rules"
)

// Lifecycle events, as IoT Core publishes them: for every client that
// connected (authenticated and got its CONNACK) with a client id, a
// connected event when its session is established and a disconnected event
// when it ends, on $aws/events/presence/connected|disconnected/<clientId>,
// to the rules engine and to permitted subscribers. The two events of one
// connection carry its sessionIdentifier and its versionNumber, which
// counts the connections of the client id on this endpoint; timestamps are
// the endpoint's clock in milliseconds. Client ids holding '#' or '+' get
// no events (AWS documents it).

// PresenceTopicPrefix is the topic prefix of the lifecycle events; the
// event type and the client id follow it.
const PresenceTopicPrefix = "$aws/events/presence/"

// Disconnect reasons of the disconnected events (AWS's disconnectReason).
const (
	ReasonClientInitiated  = "CLIENT_INITIATED_DISCONNECT"
	ReasonDuplicateClient  = "DUPLICATE_CLIENTID"
	ReasonKeepAliveTimeout = "MQTT_KEEP_ALIVE_TIMEOUT"
	ReasonAuthError        = "AUTH_ERROR"
	ReasonServerInitiated  = "SERVER_INITIATED_DISCONNECT"
	ReasonConnectionLost   = "CONNECTION_LOST"
)

// lifecycle is a session's identity in its lifecycle events.
type lifecycle struct {
	sessionID string
	version   int64
}

// connected assigns the session its identity and publishes its connected
// event.
func (b *Broker) connected(cl *mqtt.Client, s *session) {
	if cl.ID == "" || strings.ContainsAny(cl.ID, "#+") {
		return
	}
	b.versionMu.Lock()
	if b.versions == nil {
		b.versions = map[string]int64{}
	}
	v := b.versions[cl.ID]
	b.versions[cl.ID] = v + 1
	b.versionMu.Unlock()
	s.life.Store(&lifecycle{sessionID: rules.NewUUID(), version: v})
	b.publishLifecycle(cl, s, fleet.EventConnected, false, "")
}

// disconnected publishes the disconnected event of a session that had its
// connected event.
func (b *Broker) disconnected(cl *mqtt.Client, s *session, err error) {
	if s.life.Load() == nil {
		return
	}
	cause := cl.StopCause()
	if cause == nil {
		cause = err
	}
	var code packets.Code
	reason := ReasonConnectionLost
	switch {
	case cl.IsTakenOver() || errors.As(cause, &code) && code.Code == packets.ErrSessionTakenOver.Code:
		reason = ReasonDuplicateClient
	case s.ending.Load():
		reason = ReasonAuthError
	case errors.Is(cause, errRegionDown) || b.closed.Load():
		reason = ReasonServerInitiated
	case errors.As(cause, &code) && code.Code == packets.CodeDisconnect.Code:
		reason = ReasonClientInitiated
	case errors.As(cause, &code) && code.Code == packets.ErrKeepAliveTimeout.Code:
		reason = ReasonKeepAliveTimeout
	}
	b.publishLifecycle(cl, s, fleet.EventDisconnected, reason == ReasonClientInitiated, reason)
}

func (b *Broker) publishLifecycle(cl *mqtt.Client, s *session, typ string, clientInitiated bool, reason string) {
	life := s.life.Load()
	ev := fleet.LifecycleEvent{ClientID: cl.ID, Timestamp: b.cfg.Now().UnixMilli(), EventType: typ,
		SessionIdentifier: life.sessionID, PrincipalIdentifier: s.certID, VersionNumber: life.version}
	if host, _, err := net.SplitHostPort(cl.Net.Remote); err == nil {
		ev.IPAddress = host
	}
	if typ == fleet.EventDisconnected {
		ev.ClientInitiatedDisconnect, ev.DisconnectReason = &clientInitiated, reason
	}
	payload, err := json.Marshal(ev)
	if err != nil {
		b.log.Error("marshal lifecycle event", "error", err)
		return
	}
	topic := PresenceTopicPrefix + typ + "/" + cl.ID
	b.stats.LifecycleEvents.Add(1)
	b.goTracked(func() {
		b.cfg.Publish(topic, payload)
		if !b.closed.Load() {
			if err := b.server.Publish(topic, payload, false, 0); err != nil {
				b.log.Warn("deliver lifecycle event to subscribers", "error", err)
			}
		}
	})
}
