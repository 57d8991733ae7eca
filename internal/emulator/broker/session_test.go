package broker

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/emulator/pki"
	"github.com/mriot/mriot/internal/fake/memiot"
	testproc "github.com/mriot/mriot/internal/testkit/proc"
	"github.com/mriot/mriot/internal/testkit/tier"
)

// syncBuffer is an io.Writer safe for concurrent use: a log sink, a
// process's output.
type syncBuffer = testproc.Buffer

func protoName(v byte) string {
	if v == 5 {
		return "MQTT 5"
	}
	return "MQTT 3.1.1"
}

func describe(pks []packets.Packet) string {
	var out []string
	for _, pk := range pks {
		out = append(out, fmt.Sprintf("%s(%#x)", packets.PacketNames[pk.FixedHeader.Type], pk.ReasonCode))
	}
	return "[" + strings.Join(out, " ") + "]"
}

// expectEnd reads what the server sends until it closes the connection. An
// MQTT 5 client must get exactly one DISCONNECT with reason code want (none
// when want is 0); an MQTT 3.1.1 client no packet at all, as 3.1.1 has no
// DISCONNECT from the server. It returns when the close was seen.
func expectEnd(t *testing.T, c *v5Client, want byte) time.Time {
	t.Helper()
	var got []packets.Packet
	for {
		pk, err := c.read(5 * time.Second)
		if err == nil || pk.FixedHeader.Type != 0 {
			got = append(got, pk) // a packet, perhaps one the codec does not decode
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("%s connection still open 5 s later; received %s", protoName(c.version), describe(got))
		}
		break // closed
	}
	closedAt := time.Now()
	if c.version < 5 || want == 0 {
		if len(got) != 0 {
			t.Errorf("%s client received %s before the close, want nothing", protoName(c.version), describe(got))
		}
	} else if len(got) != 1 || got[0].FixedHeader.Type != packets.Disconnect || got[0].ReasonCode != want {
		t.Errorf("%s client received %s before the close, want one DISCONNECT(%#x)", protoName(c.version), describe(got), want)
	}
	return closedAt
}

// publishAcked publishes with QoS 1 and expects the very next packet to be
// its PUBACK with reason code 0.
func publishAcked(t *testing.T, c *v5Client, topic, payload string, id uint16) {
	t.Helper()
	if err := c.write(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		TopicName:   topic, PacketID: id, Payload: []byte(payload),
	}); err != nil {
		t.Fatalf("publish %s: %v", topic, err)
	}
	pk, err := c.read(5 * time.Second)
	if err != nil || pk.FixedHeader.Type != packets.Puback || pk.PacketID != id || pk.ReasonCode != 0 {
		t.Fatalf("publish %s: got %s id %d, %v; want PUBACK(0) id %d", topic, describe([]packets.Packet{pk}), pk.PacketID, err, id)
	}
}

func (f *fixture) countPayload(payload string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, m := range f.msgs {
		if string(m.payload) == payload {
			n++
		}
	}
	return n
}

// TestPublishAnswers is IoT Core's answer to a publish, over protocol
// version × QoS × allowed or denied: an allowed QoS 1 publish gets PUBACK 0;
// a denied one gets PUBACK 0x87 (Not authorized) over MQTT 5 and the session
// stays usable, a denied MQTT 5 QoS 0 publish is dropped and the session
// stays, and a denied MQTT 3.1.1 publish closes the connection without any
// packet. A denied publish never reaches the rules engine, and is logged
// with its topic, client id, QoS and protocol but without its payload.
func TestPublishAnswers(t *testing.T) {
	logs := &syncBuffer{}
	f := newFixtureLog(t, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	const (
		accepted = "accepted"        // QoS 1: PUBACK 0; handed to the rules engine
		denied   = "denied"          // QoS 1: PUBACK 0x87; QoS 0: nothing; the session stays
		closed   = "closed"          // no packet; the connection is closed
		own      = "i/{thing}/m"     // allowed by the device policy
		foreign  = "i/other/m"       // denied by the device policy
		reserved = "$aws/events/x/y" // never a device's
	)
	tests := []struct {
		name    string
		version byte
		qos     byte
		topic   string
		retain  bool
		want    string
	}{
		{"3.1.1 QoS 0 allowed", 4, 0, own, false, accepted},
		{"3.1.1 QoS 1 allowed", 4, 1, own, false, accepted},
		{"3.1.1 QoS 0 denied", 4, 0, foreign, false, closed},
		{"3.1.1 QoS 1 denied", 4, 1, foreign, false, closed},
		{"3.1.1 QoS 1 retained without iot:RetainPublish", 4, 1, own, true, closed},
		{"3.1.1 QoS 1 to $aws/events/", 4, 1, reserved, false, closed},
		{"5 QoS 0 allowed", 5, 0, own, false, accepted},
		{"5 QoS 1 allowed", 5, 1, own, false, accepted},
		{"5 QoS 0 denied", 5, 0, foreign, false, denied},
		{"5 QoS 1 denied", 5, 1, foreign, false, denied},
		{"5 QoS 0 retained without iot:RetainPublish", 5, 0, own, true, denied},
		{"5 QoS 1 retained without iot:RetainPublish", 5, 1, own, true, denied},
		{"5 QoS 1 to $aws/events/", 5, 1, reserved, false, denied},
	}
	var payloads []string
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := fmt.Sprintf("pub%d", i)
			leaf := f.device(name)
			f.onboard(leaf, devicePol)
			c, _, err := dialMQTT(f.b.Addr(), f.tls(leaf), name, tt.version)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			topic := strings.ReplaceAll(tt.topic, "{thing}", name)
			// 1.5 KB, as a device's message can be: never to be logged.
			payload := fmt.Sprintf(`{"n":%d,"secret":"%s"}`, i, strings.Repeat("SECRET", 256))
			payloads = append(payloads, payload)
			deniedBefore := f.b.Stats().PublishDenied.Load()
			if err := c.write(packets.Packet{
				FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: tt.qos, Retain: tt.retain},
				TopicName:   topic, PacketID: 7, Payload: []byte(payload),
			}); err != nil {
				t.Fatal(err)
			}
			switch tt.want {
			case closed:
				expectEnd(t, c, 0)
			default:
				if tt.qos == 1 {
					want := byte(0)
					if tt.want == denied {
						want = packets.ErrNotAuthorized.Code
					}
					pk, err := c.read(5 * time.Second)
					if err != nil || pk.FixedHeader.Type != packets.Puback || pk.PacketID != 7 || pk.ReasonCode != want {
						t.Fatalf("got %s id %d, %v; want PUBACK(%#x) id 7", describe([]packets.Packet{pk}), pk.PacketID, err, want)
					}
				}
				// The session is kept: the next publish is acknowledged, and
				// nothing came before its PUBACK (no DISCONNECT).
				publishAcked(t, c, "i/"+name+"/m", fmt.Sprintf(`{"after":%d}`, i), 8)
				f.waitMessage("i/" + name + "/m")
			}
			wantDenied, wantDelivered := int64(1), 0
			if tt.want == accepted {
				wantDenied, wantDelivered = 0, 1
				tier.Eventually(t, 5*time.Second, "the message at the rules engine", func() error {
					if f.countPayload(payload) == 0 {
						return errors.New("not there")
					}
					return nil
				})
			}
			if n := f.countPayload(payload); n != wantDelivered {
				t.Errorf("the message reached the rules engine %d times, want %d", n, wantDelivered)
			}
			if n := f.b.Stats().PublishDenied.Load() - deniedBefore; n != wantDenied {
				t.Errorf("PublishDenied went up by %d, want %d", n, wantDenied)
			}
			if tt.want == accepted {
				return
			}
			// The denied publish's log line: what and who, not the payload.
			var line map[string]any
			sc := bufio.NewScanner(strings.NewReader(logs.String()))
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				var m map[string]any
				if json.Unmarshal(sc.Bytes(), &m) == nil && m["clientId"] == name && strings.Contains(fmt.Sprint(m["msg"]), "publish denied") {
					line = m
				}
			}
			if line == nil {
				t.Fatalf("no \"publish denied\" log line for %s in:\n%s", name, logs.String())
			}
			for k, want := range map[string]any{"topic": topic, "qos": float64(tt.qos), "protocolVersion": float64(tt.version)} {
				if line[k] != want {
					t.Errorf("log line %v: %s = %v, want %v", line, k, line[k], want)
				}
			}
			if line["reason"] == nil {
				t.Errorf("log line %v has no reason", line)
			}
		})
	}
	all := logs.String()
	for _, p := range payloads {
		if strings.Contains(all, "SECRETSECRET") || strings.Contains(all, base64.StdEncoding.EncodeToString([]byte(p))) {
			t.Fatalf("a payload was logged:\n%.5000s", all)
		}
	}
}

// TestServerEndsSession is how the endpoint ends a session, over cause ×
// protocol version: an MQTT 5 client gets a DISCONNECT with the cause's
// reason code, an MQTT 3.1.1 client never gets a DISCONNECT (3.1.1 has
// none from the server): its connection is closed. A certificate that
// leaves ACTIVE ends every session that authenticated with it within 1 s,
// other certificates' sessions stay, and it cannot connect again; a session
// taken over leaves the newer one working.
func TestServerEndsSession(t *testing.T) {
	ctx := context.Background()
	const allowAll = `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"iot:*","Resource":"*"}}`
	type cause struct {
		name string
		code byte // the MQTT 5 DISCONNECT's reason code
		// end ends the sessions of leaf's certificate; it returns the
		// newcomer of a takeover, or nil.
		end func(t *testing.T, f *fixture, leaf *pki.Leaf, c fleet.Certificate) *v5Client
	}
	status := func(s fleet.CertStatus) func(*testing.T, *fixture, *pki.Leaf, fleet.Certificate) *v5Client {
		return func(t *testing.T, f *fixture, _ *pki.Leaf, c fleet.Certificate) *v5Client {
			if err := f.reg.UpdateCertificate(ctx, c.ID, s); err != nil {
				t.Fatal(err)
			}
			return nil
		}
	}
	takeover := func(v byte) func(*testing.T, *fixture, *pki.Leaf, fleet.Certificate) *v5Client {
		return func(t *testing.T, f *fixture, leaf *pki.Leaf, _ fleet.Certificate) *v5Client {
			n, _, err := dialMQTT(f.b.Addr(), f.tls(leaf), "dev1", v)
			if err != nil {
				t.Fatalf("the newcomer: %v", err)
			}
			t.Cleanup(n.Close)
			return n
		}
	}
	causes := []cause{
		{"revoked", packets.ErrNotAuthorized.Code, status(fleet.CertRevoked)},
		{"deactivated", packets.ErrNotAuthorized.Code, status(fleet.CertInactive)},
		{"taken over by 3.1.1", packets.ErrSessionTakenOver.Code, takeover(4)},
		{"taken over by 5", packets.ErrSessionTakenOver.Code, takeover(5)},
		{"endpoint closed", packets.ErrServerShuttingDown.Code, func(t *testing.T, f *fixture, _ *pki.Leaf, _ fleet.Certificate) *v5Client {
			if err := f.b.Close(); err != nil {
				t.Fatal(err)
			}
			return nil
		}},
	}
	for _, cs := range causes {
		for _, v := range []byte{4, 5} {
			t.Run(cs.name+" "+protoName(v), func(t *testing.T) {
				f := newFixture(t)
				if err := f.reg.CreatePolicy(ctx, "allow-all", allowAll); err != nil {
					t.Fatal(err)
				}
				leaf := f.device("dev1")
				c := f.onboard(leaf, "allow-all")
				bystander := f.device("other1")
				f.onboard(bystander, devicePol)

				// dev1's certificate holds two sessions (allow-all lets it
				// use another client id), and another device one.
				var sessions []*v5Client
				for _, id := range []string{"dev1", "dev1-b"} {
					s, _, err := dialMQTT(f.b.Addr(), f.tls(leaf), id, v)
					if err != nil {
						t.Fatal(err)
					}
					defer s.Close()
					sessions = append(sessions, s)
				}
				other, _, err := dialMQTT(f.b.Addr(), f.tls(bystander), "other1", v)
				if err != nil {
					t.Fatal(err)
				}
				defer other.Close()
				tier.Eventually(t, 5*time.Second, "both sessions indexed", func() error {
					if n := f.b.Sessions(c.ID); n != 2 {
						return fmt.Errorf("Sessions = %d", n)
					}
					return nil
				})

				start := time.Now()
				newcomer := cs.end(t, f, leaf, c)
				ended := sessions
				if newcomer != nil {
					ended = sessions[:1] // the takeover of dev1 only
				}
				for _, s := range ended {
					if took := expectEnd(t, s, cs.code).Sub(start); took > time.Second && newcomer == nil {
						t.Errorf("session ended %v after the cause, want within 1 s", took)
					}
				}
				if cs.name == "endpoint closed" {
					expectEnd(t, other, cs.code)
					return
				}
				publishAcked(t, other, "i/other1/m", "{}", 1)
				if newcomer != nil {
					publishAcked(t, newcomer, "i/dev1/m", "{}", 1)
					publishAcked(t, sessions[1], "i/dev1/m", "{}", 2)
					if n := f.b.Sessions(c.ID); n != 2 {
						t.Errorf("Sessions = %d after the takeover, want 2", n)
					}
					return
				}
				tier.Eventually(t, 5*time.Second, "no session left of the certificate", func() error {
					if n := f.b.Sessions(c.ID); n != 0 {
						return fmt.Errorf("Sessions = %d", n)
					}
					return nil
				})
				if s, pk, err := dialMQTT(f.b.Addr(), f.tls(leaf), "dev1", v); err == nil {
					s.Close()
					t.Fatalf("a certificate that left ACTIVE connected again: CONNACK %#x", pk.ReasonCode)
				}
			})
		}
	}
}

// revokingRegistry revokes a certificate the moment the endpoint has read
// it ACTIVE at connect time: the race between a connection and a revoke.
type revokingRegistry struct {
	*memiot.Registry
	id   string
	once sync.Once
}

func (r *revokingRegistry) CertificateByID(id string) (fleet.Certificate, bool) {
	c, ok := r.Registry.CertificateByID(id)
	if id == r.id {
		r.once.Do(func() {
			if err := r.UpdateCertificate(context.Background(), id, fleet.CertRevoked); err != nil {
				panic(err)
			}
		})
	}
	return c, ok
}

// TestRevokedWhileConnecting: a certificate revoked while its connection is
// being authenticated (read ACTIVE, revoked before the session is known)
// does not get a session that outlives the revoke.
func TestRevokedWhileConnecting(t *testing.T) {
	for _, v := range []byte{4, 5} {
		t.Run(protoName(v), func(t *testing.T) {
			f := newFixture(t)
			leaf := f.device("dev1")
			c := f.onboard(leaf, devicePol)
			reg := &revokingRegistry{Registry: f.reg, id: c.ID}
			srv, err := f.inter.IssueServer("iot.example.com", []string{"localhost", "127.0.0.1"}, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			b, err := New(Config{
				Region: testRegion, AccountID: testAccount,
				ServerCert: tls.Certificate{Certificate: [][]byte{srv.Cert.Raw, f.inter.Cert.Raw}, PrivateKey: srv.Key},
				Registry:   reg, Logger: testLogger(t),
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := b.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			s, pk, err := dialMQTT(b.Addr(), f.tls(leaf), "dev1", v)
			if err == nil {
				defer s.Close()
				expectEnd(t, s, packets.ErrNotAuthorized.Code) // at worst ended at once
				t.Logf("accepted (CONNACK %#x), then ended", pk.ReasonCode)
			}
			if n := b.Sessions(c.ID); n != 0 {
				t.Fatalf("Sessions = %d", n)
			}
		})
	}
}
