package local_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/emulator/local"
	"github.com/mriot/mriot/internal/emulator/pki"
	"github.com/mriot/mriot/internal/testkit/tier"
	"github.com/mriot/mriot/internal/workflow/presence"
)

type presenceView struct {
	Connected *struct {
		Region    string    `json:"region"`
		Since     time.Time `json:"since"`
		SessionID string    `json:"sessionId"`
	} `json:"connected"`
	LastSeen *time.Time `json:"lastSeen"`
}

func devicePresence(t *testing.T, st *local.Stack, name string) presenceView {
	t.Helper()
	var v presenceView
	if code := apiGet(t, st, "/devices/"+name, &v); code != http.StatusOK {
		t.Fatalf("GET /devices/%s: %d", name, code)
	}
	return v
}

func waitConnectedIn(t *testing.T, st *local.Stack, name, region string) presenceView {
	t.Helper()
	var v presenceView
	tier.Eventually(t, 20*time.Second, name+" connected in "+region, func() error {
		v = devicePresence(t, st, name)
		if v.Connected == nil || v.Connected.Region != region {
			return fmt.Errorf("presence %+v", v.Connected)
		}
		return nil
	})
	return v
}

// TestPresenceFollowsTheDevice: a device connected through the global
// endpoint (a real MQTT client) is shown connected in the region the
// latency router chose; that region goes down, the device reconnects
// elsewhere and is shown there; the old region's disconnect, held while it
// was down, is delivered late when it comes back and does not overwrite the
// newer session; a clean disconnect makes the device offline with lastSeen.
func TestPresenceFollowsTheDevice(t *testing.T) {
	st := startStack(t, local.Config{Regions: []string{"eu-west-1", "us-west-2", "ap-southeast-2"}, ReconcileInterval: -1,
		Latency: map[string]time.Duration{"eu-west-1": time.Millisecond, "us-west-2": 5 * time.Millisecond, "ap-southeast-2": 9 * time.Millisecond}})
	ctx := context.Background()
	if sum, err := connectFleet(ctx, st, 1); err != nil || sum.Acked != 1 {
		t.Fatalf("onboard: %v %+v", err, sum)
	}
	const name = "fleet-0000"
	if err := st.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	// The onboarding client disconnected cleanly: seen, not connected.
	if v := devicePresence(t, st, name); v.Connected != nil || v.LastSeen == nil {
		t.Fatalf("after the onboarding client left: %+v", v)
	}

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(st.RootCAPEM())
	certFile, keyFile, err := st.PKI().Device(name)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("ssl://" + st.GlobalAddr()).SetClientID(name).
		SetTLSConfig(&tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}, ServerName: pki.ServerName, MinVersion: tls.VersionTLS12}).
		SetProtocolVersion(4).SetKeepAlive(30 * time.Second).SetAutoReconnect(true).
		SetConnectRetry(true).SetConnectRetryInterval(100 * time.Millisecond).SetMaxReconnectInterval(200 * time.Millisecond))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(100)
	first := waitConnectedIn(t, st, name, "eu-west-1") // the nearest region

	if code := apiPost(t, st, "/regions/eu-west-1/down"); code != http.StatusOK && code != http.StatusNoContent {
		t.Fatalf("mark down: %d", code)
	}
	second := waitConnectedIn(t, st, name, "us-west-2") // the client reconnected through the global endpoint
	if second.Connected.SessionID == first.Connected.SessionID || !second.Connected.Since.After(first.Connected.Since) {
		t.Fatalf("the new session %+v is not newer than %+v", second.Connected, first.Connected)
	}
	rec := st.Metrics().(*obs.Recorder)
	disconnects := func() float64 {
		return rec.Get(presence.MetricEvents, obs.D("Function", presence.Function), obs.D("Type", "disconnected"))
	}
	before := disconnects()

	// eu-west-1 comes back: its held disconnected event of the first
	// session is delivered now, after the connect in us-west-2.
	if code := apiPost(t, st, "/regions/eu-west-1/up"); code != http.StatusOK && code != http.StatusNoContent {
		t.Fatalf("mark up: %d", code)
	}
	if err := st.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	if disconnects() <= before {
		t.Fatalf("the held disconnect of the first session was not applied after eu-west-1 came back")
	}
	v := devicePresence(t, st, name)
	if v.Connected == nil || v.Connected.Region != "us-west-2" || v.Connected.SessionID != second.Connected.SessionID {
		t.Fatalf("after the late disconnect from eu-west-1: %+v, want still connected in us-west-2", v.Connected)
	}
	// Every region's replica says the same.
	for _, r := range st.Regions() {
		p, err := r.Presence.Get(ctx, name)
		if err != nil || !p.Connected || p.Region != "us-west-2" || p.SessionID != second.Connected.SessionID {
			t.Errorf("%s replica: %+v %v", r.Name, p, err)
		}
	}
	var list struct {
		Items []struct {
			ThingName string `json:"thingName"`
			Connected *struct {
				Region string `json:"region"`
			} `json:"connected"`
		} `json:"items"`
	}
	if code := apiGet(t, st, "/devices?connected=true", &list); code != http.StatusOK || len(list.Items) != 1 ||
		list.Items[0].ThingName != name || list.Items[0].Connected == nil || list.Items[0].Connected.Region != "us-west-2" {
		t.Fatalf("GET /devices?connected=true: %d %+v", code, list)
	}

	c.Disconnect(100)
	tier.Eventually(t, 20*time.Second, name+" offline", func() error {
		if v := devicePresence(t, st, name); v.Connected != nil || v.LastSeen == nil || !v.LastSeen.After(second.Connected.Since) {
			return fmt.Errorf("presence %+v", v)
		}
		return nil
	})
	if code := apiGet(t, st, "/devices?connected=true", &list); code != http.StatusOK || len(list.Items) != 0 {
		t.Fatalf("GET /devices?connected=true after the disconnect: %d %+v", code, list)
	}
}
