package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/emulator/pki"
	"github.com/mriot/mriot/internal/emulator/policy"
	"github.com/mriot/mriot/internal/fake/memiot"
	"github.com/mriot/mriot/internal/testkit/tier"
)

var _ Registry = (*memiot.Registry)(nil)

const (
	testRegion  = "eu-west-1"
	testAccount = "123456789012"
	devicePol   = "Iot-Device-Policy"
)

type message struct {
	topic   string
	payload []byte
}

// fixture is one region: a registry with the fleet's intermediate CA
// registered (auto-registration on), the device policy, and a running
// endpoint whose rules-engine messages arrive on msgs.
type fixture struct {
	t     *testing.T
	root  *pki.Authority
	inter *pki.Authority
	caID  string
	reg   *memiot.Registry
	b     *Broker

	mu   sync.Mutex
	msgs []message
	got  chan struct{}
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureLog(t, testLogger(t))
}

// newFixtureLog is newFixture with the endpoint logging to log.
func newFixtureLog(t *testing.T, log *slog.Logger) *fixture {
	t.Helper()
	ctx := context.Background()
	root, err := pki.NewRoot("mriot test root", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.NewIntermediate("mriot test intermediate", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := inter.IssueServer("iot.example.com", []string{"localhost", "127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	reg := memiot.New(testRegion, testAccount)
	ca, err := reg.RegisterCACertificate(ctx, inter.CertPEM(), true)
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.CreatePolicy(ctx, devicePol, policy.DevicePolicy(testRegion, testAccount)); err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, root: root, inter: inter, caID: ca.ID, reg: reg, got: make(chan struct{}, 1024)}
	b, err := New(Config{
		Region: testRegion, AccountID: testAccount, Addr: "127.0.0.1:0",
		ServerCert: tls.Certificate{Certificate: [][]byte{srv.Cert.Raw, inter.Cert.Raw}, PrivateKey: srv.Key},
		Registry:   reg,
		Publish: func(topic string, payload []byte) {
			f.mu.Lock()
			f.msgs = append(f.msgs, message{topic, payload})
			f.mu.Unlock()
			f.got <- struct{}{}
		},
		Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	f.b = b
	return f
}

func (f *fixture) device(name string) *pki.Leaf {
	f.t.Helper()
	leaf, err := f.inter.IssueDevice(name, time.Hour)
	if err != nil {
		f.t.Fatal(err)
	}
	return leaf
}

func (f *fixture) tls(leaf *pki.Leaf) *tls.Config { return clientTLS(f.root.Cert, leaf, false) }

// onboard does what the JITR workflow does: thing, attachments, ACTIVE.
func (f *fixture) onboard(leaf *pki.Leaf, policyName string) fleet.Certificate {
	f.t.Helper()
	ctx := context.Background()
	id := fleet.CertificateID(leaf.Cert)
	c, ok := f.reg.CertificateByID(id)
	if !ok {
		var err error
		c, err = f.reg.RegisterCertificate(ctx, leaf.CertPEM(), fleet.CertActive)
		if err != nil {
			f.t.Fatal(err)
		}
	}
	name := leaf.Cert.Subject.CommonName
	if _, err := f.reg.CreateThing(ctx, name, nil); err != nil {
		f.t.Fatal(err)
	}
	if err := f.reg.AttachThingPrincipal(ctx, name, c.ARN); err != nil {
		f.t.Fatal(err)
	}
	if err := f.reg.AttachPolicy(ctx, policyName, c.ARN); err != nil {
		f.t.Fatal(err)
	}
	if err := f.reg.UpdateCertificate(ctx, id, fleet.CertActive); err != nil {
		f.t.Fatal(err)
	}
	c, _ = f.reg.CertificateByID(id)
	return c
}

// waitMessage waits for a rules-engine message on topic.
func (f *fixture) waitMessage(topic string) message {
	f.t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		f.mu.Lock()
		for _, m := range f.msgs {
			if m.topic == topic {
				f.mu.Unlock()
				return m
			}
		}
		f.mu.Unlock()
		select {
		case <-f.got:
		case <-deadline:
			f.t.Fatalf("no message on %s; got %v", topic, f.topics())
		}
	}
}

func (f *fixture) topics() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, m := range f.msgs {
		out = append(out, m.topic)
	}
	return out
}

func (f *fixture) count(topic string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, m := range f.msgs {
		if m.topic == topic {
			n++
		}
	}
	return n
}

// TestJITRFlow is the article's test: first connection dropped and the
// certificate auto-registered with the event published, dropped again while
// pending, then onboarded, connected, QoS 1 publish acknowledged and handed
// to the rules engine.
func TestJITRFlow(t *testing.T) {
	f := newFixture(t)
	leaf := f.device("dev1")
	id := fleet.CertificateID(leaf.Cert)
	topic := RegisteredTopicPrefix + f.caID

	if c, err := connectPaho(f.b.Addr(), f.tls(leaf), "dev1"); err == nil {
		c.Disconnect(0)
		t.Fatal("first connection of an unknown certificate was accepted")
	}
	m := f.waitMessage(topic)
	ev, err := fleet.ParseCertificateRegisteredEvent(m.payload)
	if err != nil {
		t.Fatalf("event does not parse: %v: %s", err, m.payload)
	}
	if ev.CertificateID != id || ev.CACertificateID != f.caID || ev.CertificateStatus != fleet.CertPendingActivation ||
		ev.AWSAccountID != testAccount || ev.Timestamp < time.Now().Add(-time.Minute).UnixMilli() || ev.RegistrationTimestamp == "" {
		t.Fatalf("event = %+v", ev)
	}
	var raw map[string]any
	if err := json.Unmarshal(m.payload, &raw); err != nil {
		t.Fatal(err)
	}
	if _, isNumber := raw["timestamp"].(float64); !isNumber {
		t.Fatalf("timestamp is not a JSON number: %s", m.payload)
	}
	c, ok := f.reg.CertificateByID(id)
	if !ok || c.Status != fleet.CertPendingActivation || c.CACertificateID != f.caID {
		t.Fatalf("registry holds %+v (found %v), want PENDING_ACTIVATION", c, ok)
	}

	// Pending: refused again and the event published again.
	if c, err := connectPaho(f.b.Addr(), f.tls(leaf), "dev1"); err == nil {
		c.Disconnect(0)
		t.Fatal("PENDING_ACTIVATION certificate was accepted")
	}
	tier.Eventually(t, 5*time.Second, "the second registered event", func() error {
		if n := f.count(topic); n < 2 {
			return fmt.Errorf("%d registered events", n)
		}
		return nil
	})
	if n := f.count(topic); n != 2 {
		t.Fatalf("%d registered events after two connections, want 2", n)
	}
	f.mu.Lock()
	var events []fleet.CertificateRegisteredEvent
	for _, m := range f.msgs {
		if m.topic == topic {
			e, err := fleet.ParseCertificateRegisteredEvent(m.payload)
			if err != nil {
				t.Fatal(err)
			}
			events = append(events, e)
		}
	}
	f.mu.Unlock()
	if events[0].RegistrationTimestamp != events[1].RegistrationTimestamp {
		t.Errorf("one registration published registration timestamps %s and %s; want the certificate's, the same in both",
			events[0].RegistrationTimestamp, events[1].RegistrationTimestamp)
	}

	f.onboard(leaf, devicePol)
	cl, err := connectPaho(f.b.Addr(), f.tls(leaf), "dev1")
	if err != nil {
		t.Fatalf("onboarded device cannot connect: %v", err)
	}
	defer cl.Disconnect(0)
	tok := cl.Publish("i/dev1/m", 1, false, `{"temp":21}`)
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("QoS 1 publish not acknowledged: %v", tok.Error())
	}
	// The rules engine has it before the PUBACK.
	f.mu.Lock()
	found := false
	for _, m := range f.msgs {
		found = found || (m.topic == "i/dev1/m" && string(m.payload) == `{"temp":21}`)
	}
	f.mu.Unlock()
	if !found {
		t.Fatalf("published message did not reach the rules engine before PUBACK: %v", f.topics())
	}
	if n := f.count(topic); n != 2 {
		t.Fatalf("an ACTIVE connection published a registered event (%d)", n)
	}
}

func TestConnectRefusals(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()

	revoked := f.device("revoked1")
	c := f.onboard(revoked, devicePol)
	if err := f.reg.UpdateCertificate(ctx, c.ID, fleet.CertRevoked); err != nil {
		t.Fatal(err)
	}
	inactive := f.device("inactive1")
	c = f.onboard(inactive, devicePol)
	if err := f.reg.UpdateCertificate(ctx, c.ID, fleet.CertInactive); err != nil {
		t.Fatal(err)
	}
	good := f.device("good1")
	f.onboard(good, devicePol)
	noPolicy := f.device("nopolicy1")
	c = f.onboard(noPolicy, devicePol)
	if err := f.reg.DetachPolicy(ctx, devicePol, c.ARN); err != nil {
		t.Fatal(err)
	}

	otherRoot, err := pki.NewRoot("unregistered root", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	otherInter, err := otherRoot.NewIntermediate("unregistered intermediate", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := otherInter.IssueDevice("stranger1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	serverAuthOnly, err := f.inter.Issue(pki.Options{CommonName: "wrongeku", Validity: time.Hour, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err != nil {
		t.Fatal(err)
	}
	expired, err := f.inter.Issue(pki.Options{CommonName: "expired1", NotBefore: time.Now().Add(-2 * time.Hour), Validity: time.Hour, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		leaf     *pki.Leaf
		clientID string
		chain    bool
		want     bool
	}{
		{"active with its thing name", good, "good1", false, true},
		{"active presenting its chain", good, "good1", true, true},
		{"wrong client id", good, "revoked1", false, false},
		{"client id of no thing", good, "nobody", false, false},
		{"revoked", revoked, "revoked1", false, false},
		{"inactive", inactive, "inactive1", false, false},
		{"no policy attached", noPolicy, "nopolicy1", false, false},
		{"unregistered CA", stranger, "stranger1", false, false},
		{"unregistered CA with chain", stranger, "stranger1", true, false},
		{"server-auth certificate", serverAuthOnly, "wrongeku", false, false},
		{"expired certificate", expired, "expired1", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tlsCfg := clientTLS(f.root.Cert, tt.leaf, tt.chain)
			cl, err := connectPaho(f.b.Addr(), tlsCfg, tt.clientID)
			if tt.want {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				cl.Disconnect(0)
				return
			}
			if err == nil {
				cl.Disconnect(0)
				t.Fatal("connection accepted")
			}
			// MQTT 5 is refused the same way.
			if v5, pk, err := dialV5(f.b.Addr(), tlsCfg, tt.clientID); err == nil {
				v5.Close()
				t.Fatalf("MQTT 5 connection accepted: CONNACK %+v", pk.ReasonCode)
			}
		})
	}
	if _, ok := f.reg.CertificateByID(fleet.CertificateID(stranger.Cert)); ok {
		t.Error("a certificate of an unregistered CA was registered")
	}
	for _, m := range f.topics() {
		if strings.HasPrefix(m, RegisteredTopicPrefix) {
			t.Errorf("a refused known certificate published %s", m)
		}
	}
}

// TestAutoRegistrationDisabled: a CA without auto-registration refuses
// unknown certificates and registers nothing.
func TestAutoRegistrationDisabled(t *testing.T) {
	f := newFixture(t)
	other, err := f.root.NewIntermediate("no-auto intermediate", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.reg.RegisterCACertificate(context.Background(), other.CertPEM(), false); err != nil {
		t.Fatal(err)
	}
	leaf, err := other.IssueDevice("manual1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if cl, err := connectPaho(f.b.Addr(), clientTLS(f.root.Cert, leaf, false), "manual1"); err == nil {
		cl.Disconnect(0)
		t.Fatal("accepted")
	}
	if _, ok := f.reg.CertificateByID(fleet.CertificateID(leaf.Cert)); ok {
		t.Fatal("registered although the CA has auto-registration off")
	}
	if len(f.topics()) != 0 {
		t.Fatalf("events published: %v", f.topics())
	}
	// An inactive CA refuses even known, ACTIVE certificates.
	f.onboard(leaf, devicePol)
	if cl, err := connectPaho(f.b.Addr(), clientTLS(f.root.Cert, leaf, false), "manual1"); err != nil {
		t.Fatalf("onboarded: %v", err)
	} else {
		cl.Disconnect(0)
	}
	ca := fleet.CertificateID(other.Cert)
	if err := f.reg.SetCAStatus(context.Background(), ca, fleet.CertInactive); err != nil {
		t.Fatal(err)
	}
	if cl, err := connectPaho(f.b.Addr(), clientTLS(f.root.Cert, leaf, false), "manual1"); err == nil {
		cl.Disconnect(0)
		t.Fatal("accepted with its CA INACTIVE")
	}
}

// TestPublishDenied: over MQTT 3.1.1 (paho), a denied publish of either QoS
// closes the connection without a PUBACK (TestPublishAnswers has MQTT 5).
func TestPublishDenied(t *testing.T) {
	for _, qos := range []byte{0, 1} {
		t.Run(map[byte]string{0: "qos0", 1: "qos1"}[qos], func(t *testing.T) {
			f := newFixture(t)
			leaf := f.device("dev1")
			f.onboard(leaf, devicePol)
			cl, err := connectPaho(f.b.Addr(), f.tls(leaf), "dev1")
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Disconnect(0)
			tok := cl.Publish("i/dev2/m", qos, false, "x")
			if qos == 1 && tok.WaitTimeout(2*time.Second) && tok.Error() == nil {
				t.Fatal("a denied QoS 1 publish was acknowledged")
			}
			select {
			case <-cl.lost:
			case <-time.After(5 * time.Second):
				t.Fatal("client not disconnected after a denied publish")
			}
			if n := f.count("i/dev2/m"); n != 0 {
				t.Fatalf("denied message reached the rules engine %d times", n)
			}
			if f.b.Stats().PublishDenied.Load() != 1 {
				t.Fatalf("PublishDenied = %d", f.b.Stats().PublishDenied.Load())
			}
		})
	}
}

// TestReservedTopics: devices cannot publish to $aws/events/ even when a
// policy allows every topic.
func TestReservedTopics(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if err := f.reg.CreatePolicy(ctx, "allow-all", `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"iot:*","Resource":"*"}}`); err != nil {
		t.Fatal(err)
	}
	leaf := f.device("admin1")
	f.onboard(leaf, "allow-all")
	cl, err := connectPaho(f.b.Addr(), f.tls(leaf), "admin1")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Disconnect(0)
	topic := RegisteredTopicPrefix + f.caID
	cl.Publish(topic, 1, false, `{"certificateId":"forged"}`).WaitTimeout(2 * time.Second)
	select {
	case <-cl.lost:
	case <-time.After(5 * time.Second):
		t.Fatal("not disconnected after publishing to $aws/events/")
	}
	if f.count(topic) != 0 {
		t.Fatal("a forged lifecycle event reached the rules engine")
	}
}

func TestSubscribeAndReceive(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if err := f.reg.CreatePolicy(ctx, "backend", `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"iot:*","Resource":"*"}}`); err != nil {
		t.Fatal(err)
	}
	// wide may subscribe to every e/ filter but receive only its own topics.
	if err := f.reg.CreatePolicy(ctx, "wide", `{"Version":"2012-10-17","Statement":[
		{"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:eu-west-1:123456789012:client/${iot:Connection.Thing.ThingName}"},
		{"Effect":"Allow","Action":"iot:Subscribe","Resource":"arn:aws:iot:eu-west-1:123456789012:topicfilter/e/*"},
		{"Effect":"Allow","Action":"iot:Receive","Resource":"arn:aws:iot:eu-west-1:123456789012:topic/e/${iot:Connection.Thing.ThingName}/*"}]}`); err != nil {
		t.Fatal(err)
	}
	back := f.device("backend1")
	f.onboard(back, "backend")
	dev := f.device("dev1")
	f.onboard(dev, devicePol)
	wide := f.device("wide1")
	f.onboard(wide, "wide")

	bc, err := connectPaho(f.b.Addr(), f.tls(back), "backend1")
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Disconnect(0)
	dc, err := connectPaho(f.b.Addr(), f.tls(dev), "dev1")
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Disconnect(0)
	wc, err := connectPaho(f.b.Addr(), f.tls(wide), "wide1")
	if err != nil {
		t.Fatal(err)
	}
	defer wc.Disconnect(0)

	got := func(c *pahoClient, filter string) (chan string, byte) {
		t.Helper()
		ch := make(chan string, 16)
		tok := c.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) { ch <- m.Topic() })
		if !tok.WaitTimeout(5 * time.Second) {
			t.Fatalf("subscribe %s timed out", filter)
		}
		st := tok.(*paho.SubscribeToken)
		return ch, st.Result()[filter]
	}
	devCh, code := got(dc, "e/dev1/#")
	if code != 1 {
		t.Fatalf("own filter granted %#x, want QoS 1", code)
	}
	if _, code := got(dc, "e/dev2/#"); code != 0x80 {
		t.Fatalf("another device's filter: SUBACK %#x, want 0x80", code)
	}
	if _, code := got(dc, "e/#"); code != 0x80 {
		t.Fatalf("e/#: SUBACK %#x, want 0x80", code)
	}
	wideCh, code := got(wc, "e/#")
	if code != 1 {
		t.Fatalf("wide e/#: SUBACK %#x", code)
	}
	for _, topic := range []string{"e/dev1/cmd", "e/wide1/cmd", "e/other/cmd"} {
		if tok := bc.Publish(topic, 1, false, "go"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("backend publish %s: %v", topic, tok.Error())
		}
	}
	expect := func(ch chan string, want string) {
		t.Helper()
		select {
		case got := <-ch:
			if got != want {
				t.Fatalf("received %s, want %s", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("did not receive %s", want)
		}
	}
	expect(devCh, "e/dev1/cmd")
	expect(wideCh, "e/wide1/cmd") // e/dev1/cmd and e/other/cmd are not received
	select {
	case extra := <-wideCh:
		t.Fatalf("received %s despite iot:Receive", extra)
	case extra := <-devCh:
		t.Fatalf("device received %s", extra)
	case <-time.After(300 * time.Millisecond):
	}
	if f.b.Stats().ReceiveSuppressed.Load() < 2 {
		t.Fatalf("ReceiveSuppressed = %d, want >= 2", f.b.Stats().ReceiveSuppressed.Load())
	}
}

func TestMQTT5(t *testing.T) {
	f := newFixture(t)
	leaf := f.device("dev5")
	f.onboard(leaf, devicePol)
	c, connack, err := dialV5(f.b.Addr(), f.tls(leaf), "dev5")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if connack.ReasonCode != 0 {
		t.Fatalf("CONNACK reason %#x", connack.ReasonCode)
	}
	if err := c.write(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
		PacketID:    1,
		Filters:     packets.Subscriptions{{Filter: "e/dev5/#", Qos: 1}, {Filter: "e/other/#", Qos: 1}},
	}); err != nil {
		t.Fatal(err)
	}
	pk, err := c.read(5 * time.Second)
	if err != nil || pk.FixedHeader.Type != packets.Suback {
		t.Fatalf("SUBACK: %+v, %v", pk.FixedHeader, err)
	}
	if len(pk.ReasonCodes) != 2 || pk.ReasonCodes[0] != 1 || pk.ReasonCodes[1] != 0x87 {
		t.Fatalf("SUBACK reason codes %x, want [01 87] (MQTT 5: Not authorized)", pk.ReasonCodes)
	}
	if err := c.write(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		TopicName:   "i/dev5/m", PacketID: 2, Payload: []byte(`{"v":5}`),
	}); err != nil {
		t.Fatal(err)
	}
	pk, err = c.read(5 * time.Second)
	if err != nil || pk.FixedHeader.Type != packets.Puback || pk.PacketID != 2 || pk.ReasonCode != 0 {
		t.Fatalf("PUBACK: %+v reason %#x, %v", pk.FixedHeader, pk.ReasonCode, err)
	}
	if m := f.waitMessage("i/dev5/m"); string(m.payload) != `{"v":5}` {
		t.Fatalf("rules engine got %s", m.payload)
	}
	// A denied QoS 1 publish: PUBACK 0x87 (Not authorized), as IoT Core
	// answers it, and the session stays.
	if err := c.write(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		TopicName:   "i/other/m", PacketID: 3, Payload: []byte(`{}`),
	}); err != nil {
		t.Fatal(err)
	}
	pk, err = c.read(5 * time.Second)
	if err != nil || pk.FixedHeader.Type != packets.Puback || pk.PacketID != 3 || pk.ReasonCode != 0x87 {
		t.Fatalf("denied publish: %+v reason %#x, %v; want PUBACK 0x87", pk.FixedHeader, pk.ReasonCode, err)
	}
	publishAcked(t, c, "i/dev5/m", `{"v":6}`, 4)
	if f.count("i/other/m") != 0 {
		t.Fatal("denied message reached the rules engine")
	}
}

// TestQoS2Refused: IoT Core supports QoS 0 and 1 only, and sends no PUBACK
// (nor PUBREC) and no SUBACK when QoS 2 is requested; the message must not
// reach the rules engine.
func TestQoS2Refused(t *testing.T) {
	f := newFixture(t)
	leaf := f.device("dev2q")
	f.onboard(leaf, devicePol)
	for _, tc := range []struct {
		name string
		pk   packets.Packet
	}{
		{"publish", packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2},
			TopicName:   "i/dev2q/m", PacketID: 1, Payload: []byte(`{"message":"q2"}`),
		}},
		{"subscribe", packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
			PacketID:    1, Filters: packets.Subscriptions{{Filter: "e/dev2q/#", Qos: 2}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _, err := dialV5(f.b.Addr(), f.tls(leaf), "dev2q")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.write(tc.pk); err != nil {
				t.Fatal(err)
			}
			for {
				pk, err := c.read(5 * time.Second)
				if err != nil {
					if errors.Is(err, os.ErrDeadlineExceeded) {
						t.Fatal("connection still open after a QoS 2 request")
					}
					break // closed
				}
				switch pk.FixedHeader.Type {
				case packets.Puback, packets.Pubrec, packets.Suback:
					t.Fatalf("QoS 2 request answered with packet type %d", pk.FixedHeader.Type)
				}
			}
		})
	}
	time.Sleep(100 * time.Millisecond)
	if n := f.count("i/dev2q/m"); n != 0 {
		t.Fatalf("a QoS 2 message reached the rules engine %d times", n)
	}
}

// TestRetainPublish: a PUBLISH with the RETAIN flag needs iot:RetainPublish
// on the topic as well as iot:Publish. The device policy grants only
// iot:Publish, so a retained publish is denied like any other denied publish
// (over MQTT 3.1.1: no PUBACK, disconnected, not handed to the rules engine);
// a policy that grants iot:RetainPublish lets it through.
func TestRetainPublish(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	const retainPol = "retain-policy"
	doc := `{"Version":"2012-10-17","Statement":[` +
		`{"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"},` +
		`{"Effect":"Allow","Action":["iot:Publish","iot:RetainPublish"],"Resource":"arn:aws:iot:*:*:topic/i/${iot:Connection.Thing.ThingName}/*"}]}`
	if err := f.reg.CreatePolicy(ctx, retainPol, doc); err != nil {
		t.Fatal(err)
	}
	denied := f.device("nort")
	f.onboard(denied, devicePol)
	cl, err := connectPaho(f.b.Addr(), f.tls(denied), "nort")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Disconnect(0)
	if tok := cl.Publish("i/nort/m", 1, true, `{"message":"r"}`); tok.WaitTimeout(2*time.Second) && tok.Error() == nil {
		t.Fatal("a retained publish without iot:RetainPublish was acknowledged")
	}
	select {
	case <-cl.lost:
	case <-time.After(5 * time.Second):
		t.Fatal("client not disconnected after a retained publish without iot:RetainPublish")
	}
	if n := f.count("i/nort/m"); n != 0 {
		t.Fatalf("denied retained message reached the rules engine %d times", n)
	}

	allowed := f.device("rt")
	f.onboard(allowed, retainPol)
	cl2, err := connectPaho(f.b.Addr(), f.tls(allowed), "rt")
	if err != nil {
		t.Fatal(err)
	}
	defer cl2.Disconnect(0)
	if tok := cl2.Publish("i/rt/m", 1, true, `{"message":"r"}`); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("retained publish with iot:RetainPublish not acknowledged: %v", tok.Error())
	}
	f.waitMessage("i/rt/m")
}
