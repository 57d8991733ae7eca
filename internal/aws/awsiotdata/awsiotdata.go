// Package awsiotdata is the AWS IoT data plane's Publish (POST
// /topics/{topic}?qos=) in one region, signed with SigV4 (service
// "iotdata") over the SDK's credentials: the commands function's only use
// of the data plane, which does not warrant the iotdataplane client module.
package awsiotdata

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/mriot/mriot/internal/core/fleet"
)

// SigningName is the data plane's SigV4 service name.
const SigningName = "iotdata"

// Publisher publishes to one region's data endpoint.
type Publisher struct {
	base   string // https://<endpoint>
	region string
	creds  aws.CredentialsProvider
	client *http.Client
	signer *v4.Signer
	now    func() time.Time
}

// New returns a Publisher to endpoint (the account's ATS data endpoint host,
// e.g. abc-ats.iot.eu-west-1.amazonaws.com, or a URL with a scheme for
// tests) in cfg's region with cfg's credentials.
func New(cfg aws.Config, endpoint string) (*Publisher, error) {
	if endpoint == "" {
		return nil, fmt.Errorf("iot data endpoint: empty: %w", fleet.ErrInvalid)
	}
	base := endpoint
	if !strings.Contains(base, "://") {
		base = "https://" + base
	}
	if _, err := url.Parse(base); err != nil {
		return nil, fmt.Errorf("iot data endpoint %q: %w: %w", endpoint, fleet.ErrInvalid, err)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	if hc, ok := cfg.HTTPClient.(*http.Client); ok && hc != nil {
		client = hc
	}
	return &Publisher{base: strings.TrimSuffix(base, "/"), region: cfg.Region, creds: cfg.Credentials,
		client: client, signer: v4.NewSigner(), now: time.Now}, nil
}

// Publish publishes payload on topic with QoS qos (0 or 1). Errors wrap the
// fleet sentinels: 429 ErrThrottled, 5xx and network failures
// ErrUnavailable, 4xx ErrInvalid.
func (p *Publisher) Publish(ctx context.Context, topic string, payload []byte, qos int) error {
	if topic == "" || (qos != 0 && qos != 1) {
		return fmt.Errorf("publish %q qos %d: %w", topic, qos, fleet.ErrInvalid)
	}
	escaped := url.PathEscape(topic)
	u, err := url.Parse(p.base + "/topics/" + escaped + "?qos=" + strconv.Itoa(qos))
	if err != nil {
		return fmt.Errorf("publish %s: %w: %w", topic, fleet.ErrInvalid, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(payload))
	if err != nil {
		return fmt.Errorf("publish %s: %w: %w", topic, fleet.ErrInvalid, err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	sum := sha256.Sum256(payload)
	if p.creds == nil {
		return fmt.Errorf("publish %s: no credentials: %w", topic, fleet.ErrInvalid)
	}
	creds, err := p.creds.Retrieve(ctx)
	if err != nil {
		return fmt.Errorf("publish %s: credentials: %w: %w", topic, fleet.ErrUnavailable, err)
	}
	if err := p.signer.SignHTTP(ctx, creds, req, hex.EncodeToString(sum[:]), SigningName, p.region, p.now()); err != nil {
		return fmt.Errorf("publish %s: sign: %w: %w", topic, fleet.ErrInvalid, err)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("publish %s: %w: %w", topic, fleet.ErrUnavailable, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	switch {
	case resp.StatusCode/100 == 2:
		return nil
	case resp.StatusCode == http.StatusTooManyRequests:
		return fmt.Errorf("publish %s: %s: %s: %w", topic, resp.Status, body, fleet.ErrThrottled)
	case resp.StatusCode >= 500:
		return fmt.Errorf("publish %s: %s: %s: %w", topic, resp.Status, body, fleet.ErrUnavailable)
	}
	return fmt.Errorf("publish %s: %s: %s: %w", topic, resp.Status, body, fleet.ErrInvalid)
}
