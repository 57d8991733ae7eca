package local_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/emulator/local"
	"github.com/mriot/mriot/internal/emulator/pki"
	"github.com/mriot/mriot/internal/emulator/sim"
	"github.com/mriot/mriot/internal/testkit/tier"
	"github.com/mriot/mriot/internal/workflow/api"
)

// commandDevice is a device on a real MQTT connection (paho) to one
// region's endpoint: it subscribes to e/<name>/cmd/+ right after its
// CONNACK and acknowledges every command on i/<name>/ack/<id>.
type commandDevice struct {
	mu       sync.Mutex
	received map[string]int // command id -> times received
	client   mqtt.Client
}

func connectCommandDevice(t *testing.T, st *local.Stack, d device, region string) *commandDevice {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(d.cert, d.key)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(st.RootCAPEM())
	cd := &commandDevice{received: map[string]int{}}
	prefix := "e/" + d.name + "/cmd/"
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("ssl://" + st.Region(region).Broker.Addr()).SetClientID(d.name).
		SetTLSConfig(&tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}, ServerName: pki.ServerName, MinVersion: tls.VersionTLS12}).
		SetCleanSession(true).SetAutoReconnect(false).SetProtocolVersion(4).SetOrderMatters(false))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s to %s: %v", d.name, region, tok.Error())
	}
	tok := c.Subscribe(prefix+"+", 1, func(c mqtt.Client, m mqtt.Message) {
		id := strings.TrimPrefix(m.Topic(), prefix)
		cd.mu.Lock()
		cd.received[id]++
		cd.mu.Unlock()
		c.Publish(fleet.AckTopic(d.name, id), 1, false, `{"result":{"ok":true}}`)
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", d.name, tok.Error())
	}
	cd.client = c
	t.Cleanup(func() { c.Disconnect(100) })
	return cd
}

func (cd *commandDevice) times(id string) int {
	cd.mu.Lock()
	defer cd.mu.Unlock()
	return cd.received[id]
}

// waitPresence polls GET /devices/{name} until the device is connected in
// region ("" : not connected).
func waitPresence(t *testing.T, st *local.Stack, name, region string) {
	t.Helper()
	tier.Eventually(t, 20*time.Second, fmt.Sprintf("%s connected in %q", name, region), func() error {
		var v struct {
			Connected *api.Connection `json:"connected"`
		}
		if code := apiGet(t, st, "/devices/"+name, &v); code != http.StatusOK {
			return fmt.Errorf("HTTP %d", code)
		}
		got := ""
		if v.Connected != nil {
			got = v.Connected.Region
		}
		if got != region {
			return fmt.Errorf("connected in %q", got)
		}
		return nil
	})
}

func postCommand(t *testing.T, st *local.Stack, name, body string) api.CommandView {
	t.Helper()
	var v api.CommandView
	if code, out := apiPostBody(t, st, "/devices/"+name+"/commands", body, &v); code != http.StatusAccepted {
		t.Fatalf("POST command to %s: %d %s", name, code, out)
	}
	return v
}

func waitCommandStatus(t *testing.T, st *local.Stack, name, id string, want fleet.CommandStatus) api.CommandView {
	t.Helper()
	var v api.CommandView
	tier.Eventually(t, 20*time.Second, fmt.Sprintf("command %s %s", id, want), func() error {
		v = api.CommandView{}
		if code := apiGet(t, st, "/devices/"+name+"/commands/"+id, &v); code != http.StatusOK || v.Status != want {
			return fmt.Errorf("HTTP %d: %+v", code, v)
		}
		return nil
	})
	return v
}

// TestCommandToConnectedDevice: a command to a device connected to a
// region is published there on e/<thing>/cmd/<id>, received by a real MQTT
// client, acknowledged on i/<thing>/ack/<id>, and shows ACKED in the API.
func TestCommandToConnectedDevice(t *testing.T) {
	tier.Tool(t, "mosquitto_pub")
	st := startStack(t, local.Config{})
	d := onboard(t, st, "cmd-online")
	region := st.Regions()[1].Name
	dev := connectCommandDevice(t, st, d, region)
	waitPresence(t, st, d.name, region)

	cmd := postCommand(t, st, d.name, `{"payload":{"op":"reboot"},"ttlSeconds":300}`)
	if cmd.Status != fleet.CommandQueued {
		t.Fatalf("POST answered %+v, want QUEUED", cmd)
	}
	got := waitCommandStatus(t, st, d.name, cmd.ID, fleet.CommandAcked)
	if dev.times(cmd.ID) != 1 || got.Deliveries != 1 || got.SentRegion != region || got.AckedAt == nil {
		t.Fatalf("received %d times; command %+v: want one delivery in %s, acknowledged", dev.times(cmd.ID), got, region)
	}
	var list api.CommandList
	if code := apiGet(t, st, "/devices/"+d.name+"/commands", &list); code != http.StatusOK || len(list.Items) != 1 || list.Items[0].ID != cmd.ID {
		t.Fatalf("GET commands: %d %+v", code, list)
	}
}

// TestCommandToOfflineDevice: a command to a device that is offline waits
// QUEUED; the device connects in another region than before, gets it
// there exactly once (nothing more however long it stays), and acks it.
func TestCommandToOfflineDevice(t *testing.T) {
	tier.Tool(t, "mosquitto_pub")
	st := startStack(t, local.Config{})
	d := onboard(t, st, "cmd-offline")
	first, second := st.Regions()[0].Name, st.Regions()[1].Name
	before := connectCommandDevice(t, st, d, first)
	waitPresence(t, st, d.name, first)
	before.client.Disconnect(100)
	waitPresence(t, st, d.name, "")

	cmd := postCommand(t, st, d.name, `{"payload":"update-firmware"}`)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := st.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	if got := waitCommandStatus(t, st, d.name, cmd.ID, fleet.CommandQueued); got.Deliveries != 0 {
		t.Fatalf("offline device's command: %+v", got)
	}

	dev := connectCommandDevice(t, st, d, second)
	got := waitCommandStatus(t, st, d.name, cmd.ID, fleet.CommandAcked)
	if got.SentRegion != second || got.Deliveries != 1 {
		t.Fatalf("command %+v: want one delivery in %s", got, second)
	}
	if err := st.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * local.StreamPollDelay)
	if n := dev.times(cmd.ID); n != 1 {
		t.Fatalf("the device received the command %d times, want exactly once", n)
	}
	if n := before.times(cmd.ID); n != 0 {
		t.Fatalf("the old connection received it %d times", n)
	}
}

// TestSimulatedDeviceAcksCommands: the device simulator (mriot device)
// subscribes to its commands and acknowledges them: a command sent while
// it runs ends ACKED.
func TestSimulatedDeviceAcksCommands(t *testing.T) {
	st := startStack(t, local.Config{})
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(st.RootCAPEM())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan sim.Summary, 1)
	go func() {
		sum, _ := sim.Run(ctx, sim.Config{
			Endpoint: st.GlobalAddr(), RootPool: roots, Count: 1, Rate: 2,
			Backoff: sim.Backoff{Initial: 200 * time.Millisecond, Max: time.Second},
			Mint: func(int) (sim.Device, error) {
				certFile, keyFile, err := st.PKI().Device("cmd-sim")
				return sim.Device{Name: "cmd-sim", CertFile: certFile, KeyFile: keyFile}, err
			},
		})
		done <- sum
	}()
	defer func() {
		cancel()
		<-done
	}()
	waitPresence(t, st, "cmd-sim", st.Regions()[0].Name)
	cmd := postCommand(t, st, "cmd-sim", `{"payload":{"op":"blink"}}`)
	got := waitCommandStatus(t, st, "cmd-sim", cmd.ID, fleet.CommandAcked)
	if got.Deliveries != 1 {
		t.Fatalf("command %+v: want one delivery", got)
	}
	cancel()
	if sum := <-done; sum.Commands != 1 {
		t.Fatalf("the simulator received %d commands, want 1: %s", sum.Commands, sum)
	}
	done <- sim.Summary{}
}
