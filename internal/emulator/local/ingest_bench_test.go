package local_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/mriot/mriot/internal/emulator/local"
	"github.com/mriot/mriot/internal/emulator/pki"
)

// BenchmarkIngest measures the telemetry path of a two-region stack, with
// its state in memory or in the state file: connected devices publish QoS
// 1 messages through the global endpoint (TLS, MQTT, the broker's policy
// check, the rules engine, the ingest function's durable event queue, its
// conditional put in the data table and the put's copy to the other
// region), each device waiting for each PUBACK, and an operation ends when
// every message of the batch is stored in both regions. msgs/s is the
// result; docs/performance.md compares the modes.
//
//	go test -run '^$' -bench BenchmarkIngest -benchtime 5s -count 3 ./internal/emulator/local
func BenchmarkIngest(b *testing.B) {
	for _, mode := range []struct {
		name            string
		persist, noSync bool
	}{
		{"memory", false, false},
		{"state-file", true, false},
		{"state-file-nosync", true, true},
	} {
		for _, devices := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/devices=%d", mode.name, devices), func(b *testing.B) {
				benchIngest(b, local.Config{Persist: mode.persist, StateNoSync: mode.noSync}, devices, 400/devices)
			})
		}
	}
}

func benchIngest(b *testing.B, cfg local.Config, devices, perDevice int) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cfg.StateDir = b.TempDir()
	cfg.APIAddr = "127.0.0.1:0"
	cfg.ReconcileInterval = -1
	st, err := local.Start(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	if sum, err := connectFleet(ctx, st, devices); err != nil || sum.Acked != int64(devices) {
		b.Fatalf("onboarding: %v, %d of %d", err, sum.Acked, devices)
	}
	if err := st.WaitIdle(ctx); err != nil {
		b.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(st.RootCAPEM())
	clients := make([]mqtt.Client, devices)
	for i := range clients {
		name := fmt.Sprintf("fleet-%04d", i)
		certFile, keyFile, err := st.PKI().Device(name)
		if err != nil {
			b.Fatal(err)
		}
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			b.Fatal(err)
		}
		c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("ssl://" + st.GlobalAddr()).SetClientID(name).
			SetTLSConfig(&tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}, ServerName: pki.ServerName, MinVersion: tls.VersionTLS12}).
			SetAutoReconnect(false).SetProtocolVersion(4))
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			b.Fatalf("connect %s: %v", name, tok.Error())
		}
		defer c.Disconnect(100)
		clients[i] = c
	}
	batch := devices * perDevice
	var published int
	before := st.StateStats()
	start := time.Now()
	for b.Loop() {
		var wg sync.WaitGroup
		errs := make(chan error, devices)
		for i, c := range clients {
			wg.Go(func() {
				topic := fmt.Sprintf("i/fleet-%04d/m", i)
				for k := range perDevice {
					tok := c.Publish(topic, 1, false, fmt.Sprintf(`{"message": {"seq": %d, "n": %d}}`, published+k, k))
					if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
						errs <- fmt.Errorf("publish: %v", tok.Error())
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		// Stored in both regions: the ingest invocations are done and the
		// data table's copies applied.
		if err := st.WaitIdle(ctx); err != nil {
			b.Fatal(err)
		}
		published += batch
	}
	elapsed := time.Since(start)
	if after := st.StateStats(); after.Commits > 0 {
		b.ReportMetric(float64(after.Commits-before.Commits)/float64(published), "commits/msg")
	}
	b.ReportMetric(float64(published)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(elapsed.Nanoseconds())/float64(published), "ns/msg")
	// Every message is there.
	for _, r := range st.Regions() {
		stored := 0
		for i := range devices {
			msgs, err := r.Telemetry.Query(ctx, fmt.Sprintf("fleet-%04d", i), 1_000_000)
			if err != nil {
				b.Fatal(err)
			}
			stored += len(msgs) - 1 // the onboarding's message
		}
		if stored != published {
			b.Fatalf("%s stored %d of %d messages", r.Name, stored, published)
		}
	}
}
