package broker

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
)

// How the endpoint ends sessions.
//
// AWS IoT disconnects every device that used a certificate "within a few
// minutes of updating a certificate from the ACTIVE state to any other
// state" (UpdateCertificate API reference); here it happens as soon as the
// registry tells of the change. AWS documents no MQTT 5 reason code for it;
// the DISCONNECT carries 0x87 (Not authorized), the lifecycle event's
// AUTH_ERROR ("authorization failed") in MQTT terms.
//
// MQTT 3.1.1 has no DISCONNECT from the server, and mochi sends one to
// every client it disconnects (on a takeover, a denied QoS 1 publish, a
// shutdown): hook.OnPacketEncode closes the connection of a 3.1.1 client
// instead, so the packet is never written.

// session returns what the endpoint knows about a connected client.
func (b *Broker) session(cl *mqtt.Client) (*session, bool) {
	v, ok := b.sessions.Load(cl)
	if !ok {
		return nil, false
	}
	return v.(*session), true
}

// track indexes a session under its certificate.
func (b *Broker) track(cl *mqtt.Client, certID string) {
	b.certMu.Lock()
	defer b.certMu.Unlock()
	if b.byCert == nil {
		b.byCert = map[string]map[*mqtt.Client]struct{}{}
	}
	set := b.byCert[certID]
	if set == nil {
		set = map[*mqtt.Client]struct{}{}
		b.byCert[certID] = set
	}
	for c := range set {
		if c.Closed() {
			delete(set, c) // a client mochi dropped without OnDisconnect (a failed CONNACK)
		}
	}
	set[cl] = struct{}{}
}

func (b *Broker) untrack(cl *mqtt.Client, certID string) {
	b.certMu.Lock()
	defer b.certMu.Unlock()
	if set := b.byCert[certID]; set != nil {
		delete(set, cl)
		if len(set) == 0 {
			delete(b.byCert, certID)
		}
	}
}

// clientsOf returns the open sessions that authenticated with a certificate.
func (b *Broker) clientsOf(certID string) []*mqtt.Client {
	b.certMu.Lock()
	defer b.certMu.Unlock()
	var out []*mqtt.Client
	for cl := range b.byCert[certID] {
		if !cl.Closed() {
			out = append(out, cl)
		}
	}
	return out
}

// sessionsOn returns the open sessions of listener id.
func (b *Broker) sessionsOn(id string) []*mqtt.Client {
	b.certMu.Lock()
	defer b.certMu.Unlock()
	var out []*mqtt.Client
	for _, set := range b.byCert {
		for cl := range set {
			if cl.Net.Listener == id && !cl.Closed() {
				out = append(out, cl)
			}
		}
	}
	return out
}

// Sessions returns how many open sessions authenticated with the
// certificate of id.
func (b *Broker) Sessions(certificateID string) int { return len(b.clientsOf(certificateID)) }

// certificateChanged is the registry's notice of a certificate's new status
// (memiot.Registry.OnCertificateChange): a certificate that is not ACTIVE
// (INACTIVE, REVOKED, deleted) ends every session that authenticated with
// it. It runs on the goroutine of the registry call and does not block.
func (b *Broker) certificateChanged(id string, status fleet.CertStatus) {
	if status == fleet.CertActive {
		return
	}
	why := "certificate " + string(status)
	if status == "" {
		why = "certificate deleted"
	}
	for _, cl := range b.clientsOf(id) {
		s, ok := b.session(cl)
		if !ok {
			cl.Stop(packets.ErrNotAuthorized)
			continue
		}
		b.endSession(cl, s, packets.ErrNotAuthorized, why)
	}
}

// endSession ends a session whose certificate left ACTIVE, once: an established MQTT 5 session gets a
// DISCONNECT with code (written on its own goroutine, as a slow client must
// not hold up the caller), any other is closed.
func (b *Broker) endSession(cl *mqtt.Client, s *session, code packets.Code, why string) {
	if s.ending.Swap(true) {
		return
	}
	b.stats.CertificateEnded.Add(1)
	b.log.Info("ending session", "clientId", cl.ID, "certificateId", s.certID, "why", why,
		"protocolVersion", cl.Properties.ProtocolVersion, "disconnectReasonCode", code.Code)
	if cl.Properties.ProtocolVersion < 5 {
		cl.Stop(code)
		return
	}
	// A client has its CONNACK a moment before mochi runs the hook that
	// marks the session established: one ended in that moment still gets
	// its DISCONNECT, once the session is up. One that never comes up in a
	// second (ended during CONNECT) is closed.
	if !b.goTracked(func() {
		select {
		case <-s.up:
			_ = b.server.DisconnectClient(cl, code)
		case <-time.After(time.Second):
			cl.Stop(code)
		}
	}) {
		cl.Stop(code)
	}
}

// goTracked runs fn on a goroutine Close waits for; it returns false, and
// runs nothing, once the endpoint is closing.
func (b *Broker) goTracked(fn func()) bool {
	b.closeMu.Lock()
	defer b.closeMu.Unlock()
	if b.closed.Load() {
		return false
	}
	b.events.Go(fn)
	return true
}
