package local

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/emulator/pki"
	"github.com/mriot/mriot/internal/emulator/sim"
)

// DemoDevices are the devices the demo onboards.
var DemoDevices = []string{"demo-001", "demo-002", "demo-003"}

// Demo runs the article's test on the local stack and tells what happened in
// a few lines: each device's first connection through the global endpoint is
// dropped while JITR onboards it, it becomes ACTIVE in every region, then it
// publishes with QoS 1 and gets its PUBACK through the global endpoint and
// through every regional endpoint.
func (s *Stack) Demo(ctx context.Context, out io.Writer, names []string) error {
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(s.rootPEM) {
		return errors.New("demo: no root CA")
	}
	if _, err := s.apiRegion(); err != nil {
		fmt.Fprintf(out, "demo: skipped: %v\n", err)
		return nil
	}
	fmt.Fprintf(out, "demo: %d devices connect to iot.example.com (%s)\n", len(names), s.GlobalAddr())
	start := time.Now()
	certs := make(map[string]tls.Certificate, len(names))
	for _, name := range names {
		certFile, keyFile, err := s.pki.Device(name)
		if err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return fmt.Errorf("demo: device %s: %w", name, err)
		}
		certs[name] = c
		err = publishOnce(ctx, s.GlobalAddr(), roots, name, c, nil)
		switch {
		case err == nil:
			fmt.Fprintf(out, "demo:   %s was onboarded already (the state was kept): connected at once\n", name)
		default:
			fmt.Fprintf(out, "demo:   %s refused: %s; its certificate is now PENDING_ACTIVATION and JITR runs\n", name, shortErr(err))
		}
	}
	for _, name := range names {
		d, err := s.waitLive(ctx, name)
		if err != nil {
			return fmt.Errorf("demo: %s never became ACTIVE everywhere: %w", name, err)
		}
		var where []string
		for _, r := range s.regions {
			if r.Down() {
				where = append(where, r.Name+"=down")
				continue
			}
			c, _ := r.Registry.CertificateByID(d.CertificateID)
			where = append(where, r.Name+"="+string(c.Status))
		}
		fmt.Fprintf(out, "demo:   %s onboarded in %s, replicated: %s (%.1fs after first connect)\n",
			name, d.OriginRegion, strings.Join(where, " "), time.Since(start).Seconds())
	}
	for _, name := range names {
		targets := []struct{ label, addr string }{{"iot.example.com", s.GlobalAddr()}}
		for _, r := range s.regions {
			addr := r.Broker.Addr()
			if r.Down() {
				addr = "" // refused: said so below
			}
			targets = append(targets, struct{ label, addr string }{r.Name, addr})
		}
		var res []string
		for _, t := range targets {
			if t.addr == "" {
				res = append(res, t.label+": down")
				continue
			}
			msg := fmt.Sprintf(`{"message": "Hello from %s via %s"}`, name, t.label)
			if err := publishOnce(ctx, t.addr, roots, name, certs[name], []byte(msg)); err != nil {
				res = append(res, t.label+": "+shortErr(err))
				continue
			}
			res = append(res, t.label+": PUBACK")
		}
		fmt.Fprintf(out, "demo:   %s publishes with QoS 1 — %s\n", name, strings.Join(res, ", "))
	}
	if err := s.WaitIdle(ctx); err != nil {
		return err
	}
	for _, r := range s.regions {
		var parts []string
		for _, name := range names {
			msgs, err := r.Telemetry.Query(ctx, name, 100)
			if err != nil {
				return err
			}
			parts = append(parts, fmt.Sprintf("%s=%d", name, len(msgs)))
		}
		note := ""
		if r.Down() {
			note = " (down: catches up when it is back)"
		}
		fmt.Fprintf(out, "demo: telemetry in %s's replica of the data table: %s%s\n", r.Name, strings.Join(parts, " "), note)
	}
	fmt.Fprintf(out, "demo: done in %.1fs\n", time.Since(start).Seconds())
	return nil
}

// waitLive waits until name is ACTIVE in the inventory and its certificate
// is ACTIVE, attached to the thing and to the policy in every region that
// is up.
func (s *Stack) waitLive(ctx context.Context, name string) (fleet.Device, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		d, err := apiInventory{s}.Get(ctx, name)
		if err == nil && d.Status == fleet.StatusActive && s.liveEverywhere(ctx, d) {
			return d, nil
		}
		select {
		case <-ctx.Done():
			return d, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (s *Stack) liveEverywhere(ctx context.Context, d fleet.Device) bool {
	for _, r := range s.regions {
		if r.Down() {
			continue // it catches up when it is back
		}
		c, ok := r.Registry.CertificateByID(d.CertificateID)
		if !ok || c.Status != fleet.CertActive {
			return false
		}
		ps, err := r.Registry.ListThingPrincipals(ctx, d.ThingName)
		if err != nil || !contains(ps, c.ARN) {
			return false
		}
		pol, err := r.Registry.ListAttachedPolicies(ctx, c.ARN)
		if err != nil || !contains(pol, DevicePolicyName) {
			return false
		}
	}
	return true
}

func contains(list []string, s string) bool {
	return slices.Contains(list, s)
}

// publishOnce connects as the device (client id = thing name) and, when
// payload is given, publishes it to i/<name>/m with QoS 1 and waits for the
// PUBACK. A nil payload only connects.
func publishOnce(ctx context.Context, addr string, roots *x509.CertPool, name string, cert tls.Certificate, payload []byte) error {
	opts := mqtt.NewClientOptions().
		AddBroker("ssl://" + addr).
		SetClientID(name).
		SetTLSConfig(&tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}, ServerName: pki.ServerName, MinVersion: tls.VersionTLS12}).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(5 * time.Second).
		SetProtocolVersion(4)
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		if tok.Error() != nil {
			return tok.Error()
		}
		return errors.New("connect timed out")
	}
	defer c.Disconnect(100)
	if payload == nil {
		return nil
	}
	pt := c.Publish("i/"+name+"/m", 1, false, payload)
	if !pt.WaitTimeout(10*time.Second) || pt.Error() != nil {
		if pt.Error() != nil {
			return pt.Error()
		}
		return errors.New("no PUBACK")
	}
	return ctx.Err()
}

// shortErr is what a person reads of a connection error (sim.Explain).
func shortErr(err error) string { return sim.Explain(err) }
