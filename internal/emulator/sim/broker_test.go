package sim_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/mriot/mriot/internal/emulator/pki"
	"github.com/mriot/mriot/internal/emulator/sim"
)

// refusal is how the test broker turns a device away.
type refusal int

const (
	// drop closes the connection without a CONNACK, as IoT Core does to a
	// PENDING_ACTIVATION certificate.
	drop refusal = iota
	// connack answers CONNACK "not authorised".
	connack
)

// jitrHook admits a device (by certificate CN) only after refusing it
// refuseFirst times; it requires the client id to be the CN and lets a
// device publish only to its own topic.
type jitrHook struct {
	mqtt.HookBase
	refuseFirst int // -1: always refuse
	how         refusal
	connectHold time.Duration // time each CONNECT is held, to observe concurrency
	// dropOnPublish closes the connection on every PUBLISH, without a
	// PUBACK, as IoT Core does on a publish its policy denies.
	dropOnPublish bool

	mu        sync.Mutex
	attempts  map[string]int
	published map[string][][]byte
	inConnect int
	maxInConn int
	badIDs    int
}

func newJITRHook(refuseFirst int, how refusal) *jitrHook {
	return &jitrHook{refuseFirst: refuseFirst, how: how, attempts: map[string]int{}, published: map[string][][]byte{}}
}

func (h *jitrHook) ID() string { return "jitr-test" }

func (h *jitrHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPublish}, []byte{b})
}

func commonName(cl *mqtt.Client) string {
	tc, ok := cl.Net.Conn.(*tls.Conn)
	if !ok {
		return ""
	}
	st := tc.ConnectionState()
	if len(st.PeerCertificates) == 0 {
		return ""
	}
	return st.PeerCertificates[0].Subject.CommonName
}

// OnConnect counts the attempt and drops refused devices in drop mode.
func (h *jitrHook) OnConnect(cl *mqtt.Client, _ packets.Packet) error {
	cn := commonName(cl)
	h.mu.Lock()
	h.attempts[cn]++
	n := h.attempts[cn]
	h.inConnect++
	h.maxInConn = max(h.maxInConn, h.inConnect)
	h.mu.Unlock()
	time.Sleep(h.connectHold)
	h.mu.Lock()
	h.inConnect--
	h.mu.Unlock()
	if h.how == drop && h.refused(n) {
		return errors.New("certificate PENDING_ACTIVATION: connection dropped")
	}
	return nil
}

func (h *jitrHook) refused(attempt int) bool {
	return h.refuseFirst < 0 || attempt <= h.refuseFirst
}

func (h *jitrHook) OnConnectAuthenticate(cl *mqtt.Client, _ packets.Packet) bool {
	cn := commonName(cl)
	h.mu.Lock()
	defer h.mu.Unlock()
	if cn == "" {
		return false
	}
	if cl.ID != cn {
		h.badIDs++
		return false
	}
	return !h.refused(h.attempts[cn])
}

func (h *jitrHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	return write && topic == sim.Topic(commonName(cl))
}

// OnPublish records a message before the broker sends its PUBACK (mochi
// calls OnPublished after), so a client's acknowledged message is recorded.
func (h *jitrHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if h.dropOnPublish {
		cl.Stop(errors.New("publish denied"))
		return pk, packets.ErrRejectPacket
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.published[pk.TopicName] = append(h.published[pk.TopicName], bytes.Clone(pk.Payload))
	return pk, nil
}

func (h *jitrHook) attemptsOf(name string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.attempts[name]
}

func (h *jitrHook) publishedTo(topic string) [][]byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.published[topic]
}

// testPKI is a root, the intermediate that signs devices and the server,
// and the server certificate for iot.example.com.
type testPKI struct {
	root, inter *pki.Authority
	server      tls.Certificate
}

func newPKI(t *testing.T) *testPKI {
	t.Helper()
	root, err := pki.NewRoot("sim test root", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.NewIntermediate("sim test intermediate", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := inter.IssueServer(sim.DefaultServerName, []string{"localhost", "127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := srv.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair([]byte(srv.ChainPEM()), []byte(keyPEM))
	if err != nil {
		t.Fatal(err)
	}
	return &testPKI{root: root, inter: inter, server: cert}
}

func (p *testPKI) rootPool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.root.Cert)
	return pool
}

// device issues an in-memory device certificate whose CN is name.
func (p *testPKI) device(t testing.TB, a *pki.Authority, name string) sim.Device {
	t.Helper()
	leaf, err := a.IssueDevice(name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := leaf.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair([]byte(leaf.CertPEM()), []byte(keyPEM))
	if err != nil {
		t.Fatal(err)
	}
	return sim.Device{Name: name, Certificate: &cert}
}

// startBroker starts a mochi-mqtt broker over mutual TLS on 127.0.0.1:0
// that trusts devices of p's intermediate; it stops when the test ends.
func startBroker(t *testing.T, p *testPKI, hook *jitrHook) (addr string, srv *mqtt.Server) {
	t.Helper()
	clientCAs := x509.NewCertPool()
	clientCAs.AddCert(p.inter.Cert)
	srv = mqtt.New(&mqtt.Options{Logger: slog.New(slog.DiscardHandler)})
	if err := srv.AddHook(hook, nil); err != nil {
		t.Fatal(err)
	}
	l := listeners.NewTCP(listeners.Config{ID: "tls", Address: "127.0.0.1:0", TLSConfig: &tls.Config{
		Certificates: []tls.Certificate{p.server},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    clientCAs,
		MinVersion:   tls.VersionTLS12,
	}})
	if err := srv.AddListener(l); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return l.Address(), srv
}
