// Package fleetapi is a client of the fleet HTTP API (internal/workflow/api)
// for operators: the deployed API, authorized by IAM (each request signed
// with AWS Signature Version 4 for execute-api, credentials from the SDK's
// default chain), or the local stack's (`mriot local`, open on loopback or
// behind a bearer token). It never runs in Lambda.
package fleetapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
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
	"github.com/mriot/mriot/internal/workflow/api"
)

// Service is the SigV4 service name of API Gateway's invoke endpoint.
const Service = "execute-api"

// Client calls one fleet API endpoint.
type Client struct {
	// Endpoint is the API's base URL, e.g. https://abc123.execute-api.eu-west-1.amazonaws.com
	// or http://127.0.0.1:8080.
	Endpoint *url.URL
	// HTTP is the transport (http.DefaultClient when nil).
	HTTP *http.Client
	// Token, when set, is sent as "Authorization: Bearer <Token>" (the local
	// API's --api-token). Ignored when Credentials is set.
	Token string
	// Credentials and Region, when Credentials is set, sign every request
	// with SigV4 for execute-api in Region.
	Credentials aws.CredentialsProvider
	Region      string
	// Now is the signing time (time.Now when nil).
	Now func() time.Time
}

// APIError is an answer outside 2xx, with the API's error text.
type APIError struct {
	Status  int
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("HTTP %d: %s", e.Status, e.Message)
}

// Is maps the answer to the fleet sentinels, so that callers test with
// errors.Is(err, fleet.ErrNotFound) and the like.
func (e *APIError) Is(target error) bool {
	switch e.Status {
	case http.StatusNotFound:
		return target == fleet.ErrNotFound
	case http.StatusBadRequest:
		return target == fleet.ErrInvalid
	case http.StatusConflict:
		return target == fleet.ErrConditionFailed
	case http.StatusServiceUnavailable, http.StatusTooManyRequests:
		return target == fleet.ErrUnavailable
	}
	return false
}

// ErrSigning wraps a failure to sign a request (no credentials found, ...).
var ErrSigning = errors.New("sign the request")

// RegionOf returns the region of an execute-api host
// (<id>.execute-api.<region>.amazonaws.com[.cn]) and whether host is one.
func RegionOf(host string) (string, bool) {
	host = strings.ToLower(host)
	if h, _, ok := strings.Cut(host, ":"); ok {
		host = h
	}
	parts := strings.Split(host, ".")
	for i := 0; i+2 < len(parts); i++ {
		if parts[i] == Service && parts[i+2] == "amazonaws" {
			return parts[i+1], true
		}
	}
	return "", false
}

// DeviceQuery selects a page of devices.
type DeviceQuery struct {
	Limit  int    // 0: the API's default
	Cursor string // "": the first page
	// Connected keeps the devices connected now (GET /devices?connected=true).
	Connected bool
}

// ListDevices returns a page of devices; the next page's cursor is in Next.
func (c *Client) ListDevices(ctx context.Context, dq DeviceQuery) (api.DeviceList, error) {
	q := page(dq.Limit, dq.Cursor)
	if dq.Connected {
		q.Set("connected", "true")
	}
	var out api.DeviceList
	_, err := c.do(ctx, http.MethodGet, "/devices", q, nil, &out)
	return out, err
}

// Device returns a device's inventory record, its presence and its state
// in every region.
func (c *Client) Device(ctx context.Context, name string) (api.DeviceView, error) {
	var out api.DeviceView
	_, err := c.do(ctx, http.MethodGet, devicePath(name), nil, nil, &out)
	return out, err
}

// TelemetryQuery selects a page of a device's messages.
type TelemetryQuery struct {
	Limit  int    // 0: the API's default
	Cursor string // "": the newest
	// Since keeps the messages at or after it: an RFC 3339 time, epoch
	// milliseconds or a duration back from the API's clock ("15m"); "":
	// every message.
	Since string
}

// Telemetry returns a page of the device's messages, newest first; the
// next (older) page's cursor is in Next, "" at the end or past Since.
func (c *Client) Telemetry(ctx context.Context, name string, tq TelemetryQuery) (api.TelemetryList, error) {
	q := page(tq.Limit, tq.Cursor)
	if tq.Since != "" {
		q.Set("since", tq.Since)
	}
	var out api.TelemetryList
	_, err := c.do(ctx, http.MethodGet, devicePath(name)+"/telemetry", q, nil, &out)
	return out, err
}

// SendCommand queues a command for the device; the API delivers it where
// the device is connected, or when it next connects, until ttl has passed
// (0: the API's default).
func (c *Client) SendCommand(ctx context.Context, name string, payload json.RawMessage, ttl time.Duration) (api.CommandView, error) {
	if !json.Valid(payload) {
		return api.CommandView{}, fmt.Errorf("send a command to %s: the payload is not JSON: %w", name, fleet.ErrInvalid)
	}
	if ttl < 0 || ttl%time.Second != 0 {
		return api.CommandView{}, fmt.Errorf("send a command to %s: ttl %s is not a positive number of seconds: %w", name, ttl, fleet.ErrInvalid)
	}
	req := api.CommandRequest{Payload: payload}
	if ttl > 0 {
		secs := int(ttl / time.Second)
		req.TTLSeconds = &secs
	}
	body, err := json.Marshal(req)
	if err != nil {
		return api.CommandView{}, fmt.Errorf("send a command to %s: %w", name, err)
	}
	var out api.CommandView
	_, err = c.do(ctx, http.MethodPost, devicePath(name)+"/commands", nil, body, &out)
	return out, err
}

// Commands returns a page of the device's commands, newest first.
func (c *Client) Commands(ctx context.Context, name string, limit int, cursor string) (api.CommandList, error) {
	var out api.CommandList
	_, err := c.do(ctx, http.MethodGet, devicePath(name)+"/commands", page(limit, cursor), nil, &out)
	return out, err
}

// Command returns one command of the device.
func (c *Client) Command(ctx context.Context, name, id string) (api.CommandView, error) {
	var out api.CommandView
	_, err := c.do(ctx, http.MethodGet, devicePath(name)+"/commands/"+url.PathEscape(id), nil, nil, &out)
	return out, err
}

// Final reports whether a command's status can change no more.
func Final(s fleet.CommandStatus) bool { return s == fleet.CommandAcked || s == fleet.CommandExpired }

// WaitCommand polls the command every interval until its status is final
// (ACKED or EXPIRED) and returns it, or returns the last status read with
// ctx's error when ctx ends first.
func (c *Client) WaitCommand(ctx context.Context, name, id string, interval time.Duration) (api.CommandView, error) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var last api.CommandView
	for {
		cmd, err := c.Command(ctx, name, id)
		switch {
		case err == nil && Final(cmd.Status):
			return cmd, nil
		case err == nil:
			last = cmd
		case ctx.Err() != nil:
			// The deadline fell during the request: say what was seen last.
		case !errors.Is(err, fleet.ErrUnavailable):
			return last, err
		}
		select {
		case <-ctx.Done():
			return last, fmt.Errorf("wait for command %s of %s (last seen %s): %w", id, name, last.Status, ctx.Err())
		case <-t.C:
		}
	}
}

func devicePath(name string) string { return "/devices/" + url.PathEscape(name) }

func page(limit int, cursor string) url.Values {
	q := url.Values{}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	return q
}

// Revoke revokes the device everywhere; changed is false when it was
// revoked already (200 rather than 202).
func (c *Client) Revoke(ctx context.Context, name string) (rec api.DeviceRecord, changed bool, err error) {
	status, err := c.do(ctx, http.MethodPost, devicePath(name)+"/revoke", nil, nil, &rec)
	return rec, status == http.StatusAccepted, err
}

// Decommission removes the device everywhere, its certificate left REVOKED;
// changed is false when it was decommissioned already.
func (c *Client) Decommission(ctx context.Context, name string) (rec api.DeviceRecord, changed bool, err error) {
	status, err := c.do(ctx, http.MethodPost, devicePath(name)+"/decommission", nil, nil, &rec)
	return rec, status == http.StatusAccepted, err
}

// NewRequest builds the request the client sends, signed or with its
// token: exported so that what is signed can be checked.
func (c *Client) NewRequest(ctx context.Context, method, path string, query url.Values, body []byte) (*http.Request, error) {
	u := *c.Endpoint
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	u.RawPath = ""
	u.RawQuery = query.Encode()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	switch {
	case c.Credentials != nil:
		creds, err := c.Credentials.Retrieve(ctx)
		if err != nil {
			return nil, fmt.Errorf("%w: credentials: %w", ErrSigning, err)
		}
		sum := sha256.Sum256(body)
		now := time.Now
		if c.Now != nil {
			now = c.Now
		}
		if err := v4.NewSigner().SignHTTP(ctx, creds, req, hex.EncodeToString(sum[:]), Service, c.Region, now().UTC()); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrSigning, err)
		}
	case c.Token != "":
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	return req, nil
}

func (c *Client) do(ctx context.Context, method, path string, query url.Values, body []byte, out any) (int, error) {
	req, err := c.NewRequest(ctx, method, path, query, body)
	if err != nil {
		return 0, err
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("%s %s: read the answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e api.ErrorBody
		msg := strings.TrimSpace(string(answer))
		if json.Unmarshal(answer, &e) == nil && e.Error != "" {
			msg = e.Error
		} else if resp.StatusCode == http.StatusForbidden && msg == "" {
			msg = "forbidden (is the request signed by a principal allowed execute-api:Invoke?)"
		}
		return resp.StatusCode, &APIError{Status: resp.StatusCode, Message: msg}
	}
	if out != nil {
		if err := json.Unmarshal(answer, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: the answer is not what the API sends: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}
