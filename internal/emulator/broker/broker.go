// Package broker is one region's AWS IoT Core data endpoint, run locally: an
// MQTT 3.1.1 and 5 broker (mochi-mqtt) over TLS that requires a client
// certificate and follows IoT Core's rules.
//
//   - The client certificate must chain to a CA registered and ACTIVE in the
//     region; otherwise the TLS handshake fails.
//   - An unknown certificate of a CA with auto-registration is registered
//     PENDING_ACTIVATION, the registered-certificate event is published on
//     $aws/events/certificates/registered/<caCertificateId>, and the
//     connection is dropped. A PENDING_ACTIVATION certificate publishes the
//     event again and is dropped; INACTIVE and REVOKED certificates are
//     dropped.
//   - An ACTIVE certificate may do only what the IoT policies attached to it
//     allow: iot:Connect on client/<clientId>, iot:Publish on topic/<topic>
//     (with the RETAIN flag iot:RetainPublish is needed too), iot:Subscribe
//     on topicfilter/<filter> (SUBACK 0x87 for a denied filter over MQTT 5,
//     0x80 over 3.1.1) and iot:Receive on topic/<topic> (the message is not
//     delivered). ${iot:Connection.Thing.ThingName} is the client id when a
//     thing of that name is attached to the certificate, else it is unset.
//   - A denied publish, as IoT Core answers it: over MQTT 5 a QoS 1 publish
//     gets PUBACK 0x87 (Not authorized) and a QoS 0 one is dropped, and the
//     session stays; over MQTT 3.1.1 the connection is closed. It is logged
//     without its payload. Devices cannot publish to $aws/events/.
//   - QoS 2 is not supported: a PUBLISH or SUBSCRIBE asking for it gets no
//     PUBACK or SUBACK; the connection is closed.
//   - Messages on allowed topics reach subscribers and the rules engine (the
//     EventPublisher).
//   - When a certificate leaves ACTIVE (the registry's OnCertificateChange),
//     every session that authenticated with it is ended at once; an MQTT 5
//     client gets DISCONNECT 0x87 (Not authorized).
//   - A newer connection with a session's client id takes it over: the older
//     MQTT 5 client gets DISCONNECT 0x8E (Session taken over).
//   - An MQTT 3.1.1 client never gets a DISCONNECT packet (3.1.1 has none
//     from the server): the server closes its connection instead.
//
// A connection is refused the way IoT Core refuses it: the server closes it
// without a CONNACK.
package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/emulator/policy"
)

// Registry is what the data endpoint reads from the region's IoT registry.
// *memiot.Registry satisfies it. None of these calls is an API call: no
// latency, fault or quota applies to them, as none applies to IoT Core's own
// lookups.
type Registry interface {
	// CACertificateList lists the CA certificates registered in the region,
	// PEM included.
	CACertificateList() []fleet.CACertificate
	// CertificateByID returns a registered device certificate.
	CertificateByID(id string) (fleet.Certificate, bool)
	// AutoRegister registers an unknown certificate of a CA with
	// auto-registration as PENDING_ACTIVATION (created=true), or returns the
	// registered one (created=false).
	AutoRegister(ctx context.Context, deviceCertPEM string) (fleet.Certificate, bool, error)
	// PoliciesForPrincipal returns the documents of the policies attached to
	// a certificate ARN.
	PoliciesForPrincipal(certARN string) []string
	// ThingsForPrincipal returns the names of the things a certificate ARN is
	// attached to.
	ThingsForPrincipal(certARN string) []string
	// CertificateRegisteredAt returns when a certificate was registered.
	CertificateRegisteredAt(id string) (time.Time, bool)
	// OnCertificateChange registers fn to be told of every change of a
	// device certificate's status, not holding the registry's lock; cancel
	// unregisters it.
	OnCertificateChange(fn func(id string, status fleet.CertStatus)) (cancel func())
}

// EventPublisher is the rules engine's entry: it receives every message
// published on an allowed topic, and the lifecycle events the endpoint emits.
// Device messages are handed over before the PUBACK is sent; lifecycle events
// are handed over on their own goroutine. payload is the publisher's own copy.
type EventPublisher func(topic string, payload []byte)

// Config configures a data endpoint.
type Config struct {
	Region    string
	AccountID string
	// Addr to listen on, e.g. "127.0.0.1:0".
	Addr string
	// ServerCert is the server certificate with its chain (leaf first), all
	// of which is presented to clients.
	ServerCert tls.Certificate
	Registry   Registry
	Publish    EventPublisher
	Logger     *slog.Logger
	// Now is the clock for certificate validity and event timestamps
	// (default time.Now).
	Now func() time.Time
	// HandshakeTimeout bounds the TLS handshake (default 10s).
	HandshakeTimeout time.Duration
}

// RegisteredTopicPrefix is the topic prefix of the registered-certificate
// events; the CA certificate id follows it.
const RegisteredTopicPrefix = "$aws/events/certificates/registered/"

// Broker is one region's data endpoint.
type Broker struct {
	cfg    Config
	log    *slog.Logger
	server *mqtt.Server
	tlsCfg *tls.Config
	ln     *listener

	down     atomic.Bool
	closed   atomic.Bool
	sessions sync.Map // *mqtt.Client -> *session
	caCache  sync.Map // CA id -> *x509.Certificate
	events   sync.WaitGroup
	stats    Stats
	closeMu  sync.Mutex // guards started, unwatch, and events.Go against Close
	started  bool
	unwatch  func()
	closeErr error

	certMu sync.Mutex
	byCert map[string]map[*mqtt.Client]struct{} // certificate id -> its sessions

	versionMu sync.Mutex
	versions  map[string]int64 // client id -> connections so far (lifecycle.go)
}

// Stats counts what the endpoint did.
type Stats struct {
	Connected         atomic.Int64 // connections accepted (CONNACK success)
	Refused           atomic.Int64 // connections refused at TLS or CONNECT
	AutoRegistered    atomic.Int64 // certificates registered PENDING_ACTIVATION
	RegisteredEvents  atomic.Int64 // registered-certificate events published
	Published         atomic.Int64 // device messages handed to the rules engine
	PublishDenied     atomic.Int64
	SubscribeDenied   atomic.Int64
	ReceiveSuppressed atomic.Int64
	CertificateEnded  atomic.Int64 // sessions ended because their certificate left ACTIVE
	LifecycleEvents   atomic.Int64 // connected and disconnected events published
}

// session is what the endpoint knows about one connected client.
type session struct {
	certID  string
	certARN string
	vars    policy.Vars
	log     *slog.Logger // the endpoint's, with the client id: made once, not per packet

	mu      sync.Mutex
	pending map[string]bool // filters of the SUBSCRIBE being processed -> allowed

	established atomic.Bool               // CONNACK sent
	up          chan struct{}             // closed when established
	ending      atomic.Bool               // endSession called
	life        atomic.Pointer[lifecycle] // set with the connected event
}

// New makes a data endpoint; Start opens it.
func New(cfg Config) (*Broker, error) {
	switch {
	case cfg.Region == "" || cfg.AccountID == "":
		return nil, fmt.Errorf("broker: region and account are required: %w", fleet.ErrInvalid)
	case cfg.Registry == nil:
		return nil, fmt.Errorf("broker %s: a registry is required: %w", cfg.Region, fleet.ErrInvalid)
	case len(cfg.ServerCert.Certificate) == 0:
		return nil, fmt.Errorf("broker %s: a server certificate is required: %w", cfg.Region, fleet.ErrInvalid)
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Publish == nil {
		cfg.Publish = func(string, []byte) {}
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	b := &Broker{cfg: cfg, log: cfg.Logger.With("component", "broker", "region", cfg.Region)}
	b.tlsCfg = &tls.Config{
		Certificates:     []tls.Certificate{cfg.ServerCert},
		ClientAuth:       tls.RequireAnyClientCert, // verified against the registry, which changes at run time
		VerifyConnection: b.verifyClient,
		MinVersion:       tls.VersionTLS12,
	}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumQos = 1             // IoT Core supports QoS 0 and 1
	caps.MinimumProtocolVersion = 4 // MQTT 3.1.1 and 5
	// A denied subscription: SUBACK 0x87 (Not authorized) for MQTT 5, as IoT
	// Core answers; mochi sends 0x80 (failure) to MQTT 3.1.1 clients, the
	// only failure code 3.1.1 has.
	caps.Compatibilities.ObscureNotAuthorized = false
	b.server = mqtt.New(&mqtt.Options{
		Capabilities: caps,
		InlineClient: true,
		// mochi logs whole packets; the redactor keeps their payloads out.
		Logger: slog.New(redactPackets{cfg.Logger.Handler()}).With("component", "mochi", "region", cfg.Region),
	})
	if err := b.server.AddHook(&hook{b: b}, nil); err != nil {
		return nil, fmt.Errorf("broker %s: add hook: %w", cfg.Region, err)
	}
	return b, nil
}

// Start listens and serves; the endpoint accepts connections when it returns.
func (b *Broker) Start(ctx context.Context) error {
	var lc net.ListenConfig
	nl, err := lc.Listen(ctx, "tcp", b.cfg.Addr)
	if err != nil {
		return fmt.Errorf("broker %s: listen on %s: %w", b.cfg.Region, b.cfg.Addr, err)
	}
	b.ln = &listener{b: b, id: "mqtts-" + b.cfg.Region, ln: nl}
	if err := b.server.AddListener(b.ln); err != nil {
		_ = nl.Close()
		return fmt.Errorf("broker %s: add listener: %w", b.cfg.Region, err)
	}
	// Watching before serving: no session can authenticate unwatched.
	unwatch := b.cfg.Registry.OnCertificateChange(b.certificateChanged)
	if err := b.server.Serve(); err != nil {
		unwatch()
		_ = nl.Close()
		return fmt.Errorf("broker %s: serve: %w", b.cfg.Region, err)
	}
	b.closeMu.Lock()
	b.started = true
	b.unwatch = unwatch
	b.closeMu.Unlock()
	b.log.Info("data endpoint listening", "addr", nl.Addr().String())
	return nil
}

// Addr is the address the endpoint listens on ("" before Start).
func (b *Broker) Addr() string {
	if b.ln == nil {
		return ""
	}
	return b.ln.ln.Addr().String()
}

// Accept serves a connection accepted elsewhere (the global endpoint's,
// handed over in process rather than proxied over a second TCP connection)
// as if the endpoint had accepted it: refused (closed) while the region is
// down. When the endpoint is not serving (before Start, after Close) it
// returns an error, as a dial would fail, and leaves the connection to the
// caller.
func (b *Broker) Accept(conn net.Conn) error {
	if b.ln == nil || b.closed.Load() {
		return errNotServing
	}
	return b.ln.serveConn(conn)
}

// Stats returns the endpoint's counters.
func (b *Broker) Stats() *Stats { return &b.stats }

// SetDown marks the region's endpoint down (new connections are refused and
// existing ones closed) or up again.
func (b *Broker) SetDown(down bool) {
	if b.down.Swap(down) == down {
		return
	}
	b.log.Warn("data endpoint marked", "down", down)
	if !down {
		return
	}
	for _, cl := range b.server.Clients.GetAll() {
		if !cl.Net.Inline {
			cl.Stop(errRegionDown)
		}
	}
}

// Down reports whether the endpoint is marked down.
func (b *Broker) Down() bool { return b.down.Load() }

var errRegionDown = errors.New("region marked down")

// Close stops the endpoint, closes every connection and waits for the
// endpoint's goroutines. It is safe to call more than once.
func (b *Broker) Close() error {
	if b.closed.Swap(true) {
		return nil
	}
	b.closeMu.Lock() // after this, goTracked starts nothing
	started, unwatch := b.started, b.unwatch
	b.closeMu.Unlock()
	if unwatch != nil {
		unwatch()
	}
	if started {
		if err := b.server.Close(); err != nil {
			b.closeErr = fmt.Errorf("broker %s: close: %w", b.cfg.Region, err)
		}
		b.ln.wait()
	} else if b.ln != nil {
		_ = b.ln.ln.Close()
	}
	b.events.Wait()
	return b.closeErr
}

// verifyClient is the TLS check: the client's certificate chains, for client
// authentication, to a CA registered and ACTIVE in this region.
func (b *Broker) verifyClient(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("no client certificate")
	}
	leaf := cs.PeerCertificates[0]
	roots := x509.NewCertPool()
	n := 0
	for _, ca := range b.cfg.Registry.CACertificateList() {
		if ca.Status != fleet.CertActive {
			continue
		}
		c, err := b.caCert(ca)
		if err != nil {
			b.log.Error("registered CA certificate does not parse", "caCertificateId", ca.ID, "error", err)
			continue
		}
		roots.AddCert(c)
		n++
	}
	if n == 0 {
		return fmt.Errorf("client certificate %s: no ACTIVE CA is registered in %s", leaf.Subject.CommonName, b.cfg.Region)
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, CurrentTime: b.cfg.Now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return fmt.Errorf("client certificate %q does not chain to an ACTIVE CA registered in %s: %w", leaf.Subject.CommonName, b.cfg.Region, err)
	}
	return nil
}

func (b *Broker) caCert(ca fleet.CACertificate) (*x509.Certificate, error) {
	if c, ok := b.caCache.Load(ca.ID); ok {
		return c.(*x509.Certificate), nil
	}
	c, err := fleet.ParseCertificatePEM(ca.PEM)
	if err != nil {
		return nil, err
	}
	b.caCache.Store(ca.ID, c)
	return c, nil
}

// authenticate applies IoT Core's connect rules; it returns whether the
// client may connect.
func (b *Broker) authenticate(cl *mqtt.Client) bool {
	log := b.log.With("clientId", cl.ID, "remote", cl.Net.Remote)
	if b.down.Load() {
		log.Info("connection refused", "reason", "region_down")
		return false
	}
	tc, ok := cl.Net.Conn.(*tls.Conn)
	if !ok {
		log.Error("connection refused: not a TLS connection", "type", fmt.Sprintf("%T", cl.Net.Conn))
		return false
	}
	peers := tc.ConnectionState().PeerCertificates
	if len(peers) == 0 {
		log.Info("connection refused", "reason", "no_client_certificate")
		return false
	}
	leaf := peers[0]
	id := fleet.CertificateID(leaf)
	log = log.With("certificateId", id)
	cert, found := b.cfg.Registry.CertificateByID(id)
	if !found {
		c, created, err := b.cfg.Registry.AutoRegister(context.Background(), fleet.EncodePEM(leaf))
		if err != nil {
			log.Info("connection refused: certificate not registered and cannot be auto-registered", "reason", "unregistered", "error", err)
			return false
		}
		cert = c
		if created {
			b.stats.AutoRegistered.Add(1)
			log.Info("certificate auto-registered", "status", c.Status, "caCertificateId", c.CACertificateID)
		}
	}
	switch cert.Status {
	case fleet.CertActive:
	case fleet.CertPendingActivation:
		b.publishRegistered(cert)
		log.Info("connection refused", "reason", "pending_activation")
		return false
	default:
		log.Info("connection refused", "reason", "certificate_status", "status", cert.Status)
		return false
	}
	things := b.cfg.Registry.ThingsForPrincipal(cert.ARN)
	vars := policy.Vars{
		policy.VarClientID:   cl.ID,
		policy.VarCommonName: leaf.Subject.CommonName,
		policy.VarIsAttached: "false",
	}
	if slices.Contains(things, cl.ID) {
		vars[policy.VarThingName] = cl.ID
		vars[policy.VarIsAttached] = "true"
	}
	s := &session{certID: cert.ID, certARN: cert.ARN, vars: vars, up: make(chan struct{}), log: b.log.With("clientId", cl.ID)}
	if !b.allowed(log, s, policy.ActionConnect, "client", cl.ID) {
		log.Info("connection refused", "reason", "policy", "action", policy.ActionConnect)
		return false
	}
	if atomic.LoadUint32(&cl.Properties.Will.Flag) == 1 {
		will := cl.Properties.Will
		if !b.mayPublish(log, s, will.TopicName) ||
			will.Retain && !b.allowed(log, s, policy.ActionRetainPublish, "topic", will.TopicName) {
			log.Info("connection refused", "reason", "policy", "action", policy.ActionPublish, "willTopic", cl.Properties.Will.TopicName)
			return false
		}
	}
	b.sessions.Store(cl, s)
	b.track(cl, s.certID)
	// The certificate may have left ACTIVE since it was read above: then
	// certificateChanged either found this session in the index or ran
	// before it was there, and the registry says so now.
	if !b.stillActive(s) {
		b.sessions.Delete(cl)
		b.untrack(cl, s.certID)
		log.Info("connection refused", "reason", "certificate_status")
		return false
	}
	return true
}

// allowed evaluates the policies attached to the session's certificate.
func (b *Broker) allowed(log *slog.Logger, s *session, action, kind, name string) bool {
	docs := b.cfg.Registry.PoliciesForPrincipal(s.certARN)
	ok, err := policy.Allowed(docs, action, policy.ResourceARN(b.cfg.Region, b.cfg.AccountID, kind, name), s.vars)
	if err != nil {
		log.Error("policy evaluation failed; denied", "action", action, "resource", name, "error", err)
		return false
	}
	return ok
}

func (b *Broker) mayPublish(log *slog.Logger, s *session, topic string) bool {
	if strings.HasPrefix(topic, "$aws/events/") {
		return false
	}
	return b.allowed(log, s, policy.ActionPublish, "topic", topic)
}

// stillActive reports whether the session's certificate is still ACTIVE; IoT
// Core disconnects a device whose certificate is deactivated or revoked.
func (b *Broker) stillActive(s *session) bool {
	c, ok := b.cfg.Registry.CertificateByID(s.certID)
	return ok && c.Status == fleet.CertActive
}

// authorizePublish applies IoT Core's rules to a device's PUBLISH, once mochi
// has resolved its topic alias: nil lets it through, ErrRejectPacket drops
// it. A denied publish is answered as IoT Core answers it: over MQTT 5,
// PUBACK 0x87 (Not authorized) for QoS 1 and nothing for QoS 0, the session
// kept; over MQTT 3.1.1 the connection is closed. The log line has no
// payload.
func (b *Broker) authorizePublish(cl *mqtt.Client, pk packets.Packet) error {
	s, ok := b.session(cl)
	if !ok {
		cl.Stop(packets.ErrNotAuthorized)
		return packets.ErrRejectPacket
	}
	log := s.log
	if !b.stillActive(s) {
		b.endSession(cl, s, packets.ErrNotAuthorized, "certificate no longer ACTIVE")
		return packets.ErrRejectPacket
	}
	var reason string
	switch {
	case strings.HasPrefix(pk.TopicName, "$aws/events/"):
		reason = "reserved_topic"
	case !b.allowed(log, s, policy.ActionPublish, "topic", pk.TopicName):
		reason = policy.ActionPublish
	case pk.FixedHeader.Retain && !b.allowed(log, s, policy.ActionRetainPublish, "topic", pk.TopicName):
		reason = policy.ActionRetainPublish
	default:
		return nil
	}
	b.stats.PublishDenied.Add(1)
	log = log.With("topic", pk.TopicName, "qos", pk.FixedHeader.Qos, "retain", pk.FixedHeader.Retain,
		"protocolVersion", cl.Properties.ProtocolVersion, "reason", reason, "payloadBytes", len(pk.Payload))
	switch {
	case cl.Properties.ProtocolVersion < 5:
		log.Info("publish denied; connection closed (MQTT 3.1.1)")
		cl.Stop(packets.ErrNotAuthorized)
		return packets.ErrRejectPacket
	case pk.FixedHeader.Qos > 0:
		log.Info("publish denied; PUBACK 0x87 (Not authorized)")
		// Written here rather than by mochi (for a packets.Code returned),
		// which would log the whole packet, payload included, as an error.
		ack := packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Puback},
			PacketID:    pk.PacketID,
			ReasonCode:  packets.ErrNotAuthorized.Code,
			Properties:  packets.Properties{ReasonString: packets.ErrNotAuthorized.Reason},
		}
		if err := cl.WritePacket(ack); err != nil {
			log.Info("PUBACK not written", "error", err)
		}
		return packets.ErrRejectPacket
	default:
		log.Info("publish denied; dropped (QoS 0)")
		return packets.ErrRejectPacket
	}
}

// acl authorizes a subscription or a delivery; publishes are authorized by
// authorizePublish.
func (b *Broker) acl(cl *mqtt.Client, topic string, write bool) bool {
	if write {
		return true
	}
	s, ok := b.session(cl)
	if !ok {
		return false
	}
	log := s.log
	if !b.stillActive(s) {
		b.endSession(cl, s, packets.ErrNotAuthorized, "certificate no longer ACTIVE")
		return false
	}
	s.mu.Lock()
	decided, subscribing := s.pending[topic]
	s.mu.Unlock()
	if subscribing {
		return decided
	}
	if b.allowed(log, s, policy.ActionReceive, "topic", topic) {
		return true
	}
	b.stats.ReceiveSuppressed.Add(1)
	log.Debug("delivery suppressed by iot:Receive", "topic", topic)
	return false
}

// subscribing records the policy decision of each filter of a SUBSCRIBE
// before mochi asks for them.
func (b *Broker) subscribing(cl *mqtt.Client, pk packets.Packet) {
	v, ok := b.sessions.Load(cl)
	if !ok {
		return
	}
	s := v.(*session)
	log := b.log.With("clientId", cl.ID)
	pending := make(map[string]bool, len(pk.Filters))
	for _, f := range pk.Filters {
		// Basic Ingest topics go to a rule, never through the broker: no
		// client may subscribe to them, whatever its policy says.
		ok := !strings.HasPrefix(f.Filter, policy.BasicIngestPrefix) &&
			b.allowed(log, s, policy.ActionSubscribe, "topicfilter", f.Filter)
		if !ok {
			b.stats.SubscribeDenied.Add(1)
			log.Info("subscribe denied", "filter", f.Filter)
		}
		pending[f.Filter] = ok
	}
	s.mu.Lock()
	s.pending = pending
	s.mu.Unlock()
}

func (b *Broker) subscribed(cl *mqtt.Client) {
	if v, ok := b.sessions.Load(cl); ok {
		s := v.(*session)
		s.mu.Lock()
		s.pending = nil
		s.mu.Unlock()
	}
}

// registeredEvent is the registered-certificate event of IoT Core.
type registeredEvent struct {
	CertificateID                    string           `json:"certificateId"`
	CACertificateID                  string           `json:"caCertificateId"`
	Timestamp                        int64            `json:"timestamp"`
	CertificateStatus                fleet.CertStatus `json:"certificateStatus"`
	AWSAccountID                     string           `json:"awsAccountId"`
	CertificateRegistrationTimestamp int64            `json:"certificateRegistrationTimestamp"`
}

// publishRegistered emits the registered-certificate event to the rules
// engine and to permitted subscribers, on its own goroutine, as IoT Core
// drops the connection without waiting for the rules.
func (b *Broker) publishRegistered(c fleet.Certificate) {
	now := b.cfg.Now().UnixMilli()
	// The registration timestamp is the certificate's, not the event's: the
	// same in every event IoT publishes again for one registration.
	registered := now
	if at, ok := b.cfg.Registry.CertificateRegisteredAt(c.ID); ok && !at.IsZero() {
		registered = at.UnixMilli()
	}
	payload, err := json.Marshal(registeredEvent{
		CertificateID: c.ID, CACertificateID: c.CACertificateID, Timestamp: now,
		CertificateStatus: fleet.CertPendingActivation, AWSAccountID: b.cfg.AccountID,
		CertificateRegistrationTimestamp: registered,
	})
	if err != nil {
		b.log.Error("marshal registered-certificate event", "error", err)
		return
	}
	topic := RegisteredTopicPrefix + c.CACertificateID
	b.stats.RegisteredEvents.Add(1)
	b.goTracked(func() {
		b.cfg.Publish(topic, payload)
		if !b.closed.Load() {
			if err := b.server.Publish(topic, payload, false, 0); err != nil {
				b.log.Warn("deliver registered-certificate event to subscribers", "error", err)
			}
		}
	})
}

// hook plugs the rules into mochi.
type hook struct {
	mqtt.HookBase
	b *Broker
}

func (h *hook) ID() string { return "iot-core-rules" }

func (h *hook) Provides(bt byte) bool {
	return oneOf(bt, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnSubscribe, mqtt.OnSubscribed,
		mqtt.OnPublish, mqtt.OnDisconnect, mqtt.OnSessionEstablished, mqtt.OnPacketRead, mqtt.OnPacketEncode)
}

// errQoS2 closes a connection that requests QoS 2: IoT Core supports QoS 0
// and 1 only and answers a QoS 2 PUBLISH or SUBSCRIBE with no PUBACK or
// SUBACK (mochi would downgrade it to QoS 1 and acknowledge it). mochi ends
// the connection when a hook rejects a packet it read.
var errQoS2 = fmt.Errorf("QoS 2 is not supported: %w", packets.ErrRejectPacket)

func (h *hook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	qos2 := pk.FixedHeader.Type == packets.Publish && pk.FixedHeader.Qos == 2
	if pk.FixedHeader.Type == packets.Subscribe {
		for _, f := range pk.Filters {
			qos2 = qos2 || f.Qos == 2
		}
	}
	if qos2 {
		h.b.log.Info("QoS 2 requested; disconnecting", "clientId", cl.ID, "packetType", pk.FixedHeader.Type)
		return pk, errQoS2
	}
	return pk, nil
}

func oneOf(b byte, set ...byte) bool { return slices.Contains(set, b) }

func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, _ packets.Packet) bool {
	if h.b.authenticate(cl) {
		return true
	}
	h.b.stats.Refused.Add(1)
	// IoT Core drops a refused connection without a CONNACK.
	cl.Stop(packets.ErrNotAuthorized)
	return false
}

func (h *hook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	if s, ok := h.b.session(cl); ok && s.established.CompareAndSwap(false, true) {
		close(s.up)
		h.b.connected(cl, s)
	}
	h.b.stats.Connected.Add(1)
	h.b.log.Info("client connected", "clientId", cl.ID, "protocolVersion", cl.Properties.ProtocolVersion)
}

func (h *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	return h.b.acl(cl, topic, write)
}

func (h *hook) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	h.b.subscribing(cl, pk)
	return pk
}

func (h *hook) OnSubscribed(cl *mqtt.Client, _ packets.Packet, _ []byte) {
	h.b.subscribed(cl)
}

func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil // the endpoint's own events were handed to the rules already
	}
	if err := h.b.authorizePublish(cl, pk); err != nil {
		return pk, err
	}
	h.b.stats.Published.Add(1)
	h.b.cfg.Publish(pk.TopicName, slices.Clone(pk.Payload))
	return pk, nil
}

func (h *hook) OnDisconnect(cl *mqtt.Client, err error, _ bool) {
	if v, ok := h.b.sessions.LoadAndDelete(cl); ok {
		h.b.untrack(cl, v.(*session).certID)
		h.b.disconnected(cl, v.(*session), err)
		h.b.log.Info("client disconnected", "clientId", cl.ID, "error", err, "cause", cl.StopCause(), "takenOver", cl.IsTakenOver())
	}
}

// OnPacketEncode keeps DISCONNECT packets from MQTT 3.1.1 clients, which
// the protocol forbids (mosquitto ends with "A network protocol error
// occurred"): mochi sends one to every client it disconnects, whatever its
// version, so the connection is closed here instead and the write that
// follows fails on it.
func (h *hook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Disconnect && cl.Properties.ProtocolVersion < 5 && !cl.Net.Inline {
		cl.Stop(packets.Code{Code: pk.ReasonCode, Reason: pk.Properties.ReasonString})
	}
	return pk
}
