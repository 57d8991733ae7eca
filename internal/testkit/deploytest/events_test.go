package deploytest

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/mriot/mriot/internal/aws/ddbitem"
	"github.com/mriot/mriot/internal/core/fleet"
)

// loadCert reads one certificate of events/pki.
func loadCert(t *testing.T, name string) (pemText string, id string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root(t), "events", "pki", name))
	if err != nil {
		t.Fatal(err)
	}
	c, err := fleet.ParseCertificatePEM(string(b))
	if err != nil {
		t.Fatalf("events/pki/%s: %v", name, err)
	}
	return string(b), fleet.CertificateID(c)
}

// scheduledEvent is what the reconciler's EventBridge Scheduler schedule
// delivers (the Input of its target in template.yaml, with the scheduler's
// context attributes filled in). The handler ignores it: a pass resumes
// from the position saved in the lease table. It names the run in the
// function's log (the request's payload) and in the on-failure queue.
type scheduledEvent struct {
	Source        string `json:"source"`
	ScheduleArn   string `json:"scheduleArn"`
	ScheduledTime string `json:"scheduledTime"`
	ExecutionID   string `json:"executionId"`
	AttemptNumber string `json:"attemptNumber"`
}

// TestEventFixturesDecode: every file of events/ decodes into the input type
// of the handler its name says (jitr-, ingest-, replicate-, api-,
// reconcile-), and the fixtures agree with the committed test PKI.
func TestEventFixturesDecode(t *testing.T) {
	dir := filepath.Join(root(t), "events")
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	devicePEM, deviceID := loadCert(t, "test_001.crt")
	_, caID := loadCert(t, "intermediate.crt")
	seen := map[string]int{}
	for _, f := range files {
		name := filepath.Base(f)
		if name == "env.json" {
			continue
		}
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			kind, _, _ := strings.Cut(name, "-")
			seen[kind]++
			switch kind {
			case "jitr":
				ev, err := fleet.ParseCertificateRegisteredEvent(raw)
				if err != nil {
					t.Fatal(err)
				}
				if ev.CertificateID != deviceID || ev.CACertificateID != caID {
					t.Errorf("certificateId/caCertificateId = %s/%s, want the ids of events/pki test_001.crt/intermediate.crt %s/%s",
						ev.CertificateID, ev.CACertificateID, deviceID, caID)
				}
				if ev.CertificateStatus != fleet.CertPendingActivation {
					t.Errorf("certificateStatus = %s, want PENDING_ACTIVATION (as JITR delivers it)", ev.CertificateStatus)
				}
			case "ingest":
				ev, err := fleet.ParseTelemetryEvent(raw, 8192)
				if err != nil {
					t.Fatal(err)
				}
				if ev.Device != "test_001" {
					t.Errorf("device = %s, want test_001", ev.Device)
				}
			case "replicate":
				var ev events.EventBridgeEvent
				if err := json.Unmarshal(raw, &ev); err != nil {
					t.Fatal(err)
				}
				if ev.Source != "mriot.inventory" || ev.DetailType != "DeviceInventoryChange" {
					t.Errorf("source/detail-type = %s/%s, want the pipe's mriot.inventory/DeviceInventoryChange", ev.Source, ev.DetailType)
				}
				var rec events.DynamoDBEventRecord
				if err := json.Unmarshal(ev.Detail, &rec); err != nil {
					t.Fatalf("detail is not a DynamoDB stream record: %v", err)
				}
				if rec.EventSource != "aws:dynamodb" || rec.Change.StreamViewType != "NEW_IMAGE" {
					t.Errorf("eventSource/StreamViewType = %s/%s, want aws:dynamodb/NEW_IMAGE", rec.EventSource, rec.Change.StreamViewType)
				}
				if k := rec.Change.Keys[ddbitem.AttrThingName]; k.DataType() != events.DataTypeString || k.String() != "test_001" {
					t.Errorf("Keys = %v, want ThingName test_001", rec.Change.Keys)
				}
				switch rec.EventName {
				case "INSERT", "MODIFY":
					d, err := ddbitem.DeviceFromStreamImage(rec.Change.NewImage)
					if err != nil {
						t.Fatal(err)
					}
					if d.CertificatePEM != devicePEM || d.CertificateID != deviceID || d.CACertificateID != caID {
						t.Errorf("NewImage certificate does not match events/pki: id %s ca %s", d.CertificateID, d.CACertificateID)
					}
					if !d.Status.Valid() || d.OriginRegion == "" || d.Version < 1 {
						t.Errorf("NewImage = %+v: want a valid status, an origin region and a version", d)
					}
				case "REMOVE":
					if rec.Change.NewImage != nil {
						t.Errorf("REMOVE record with a NewImage")
					}
				default:
					t.Errorf("eventName = %q", rec.EventName)
				}
			case "reconcile":
				dec := json.NewDecoder(bytes.NewReader(raw))
				dec.DisallowUnknownFields()
				var ev scheduledEvent
				if err := dec.Decode(&ev); err != nil {
					t.Fatalf("not the schedule's payload: %v", err)
				}
				if _, err := time.Parse(time.RFC3339, ev.ScheduledTime); err != nil || ev.Source != "mriot.reconcile" ||
					!strings.HasPrefix(ev.ScheduleArn, "arn:aws:scheduler:") || ev.ExecutionID == "" || ev.AttemptNumber == "" {
					t.Errorf("scheduled event = %+v (%v): want the schedule's payload with its context attributes filled in", ev, err)
				}
			case "presence":
				ev, err := fleet.ParseLifecycleEvent(raw)
				if err != nil {
					t.Fatal(err)
				}
				if ev.ClientID != "test_001" || !strings.HasSuffix(name, "-"+ev.EventType+".json") {
					t.Errorf("clientId/eventType = %s/%s, want test_001 and the type the file name says", ev.ClientID, ev.EventType)
				}
				if (ev.EventType == fleet.EventDisconnected) != (ev.ClientInitiatedDisconnect != nil && ev.DisconnectReason != "") {
					t.Errorf("clientInitiatedDisconnect/disconnectReason in a %s event: %v/%q (disconnected events only)", ev.EventType, ev.ClientInitiatedDisconnect, ev.DisconnectReason)
				}
			case "commands":
				// The commands function's three event shapes: a commands
				// stream batch (an INSERT of a command item), a presence
				// stream batch (a connect), the ack rule's output.
				if strings.HasSuffix(name, "-ack.json") {
					ev, err := fleet.ParseAckEvent(raw)
					if err != nil {
						t.Fatal(err)
					}
					if ev.ThingName != "test_001" {
						t.Errorf("thingName = %s, want test_001", ev.ThingName)
					}
					break
				}
				var ev events.DynamoDBEvent
				if err := json.Unmarshal(raw, &ev); err != nil {
					t.Fatal(err)
				}
				if len(ev.Records) != 1 || ev.Records[0].EventSource != "aws:dynamodb" || ev.Records[0].Change.StreamViewType != "NEW_AND_OLD_IMAGES" {
					t.Fatalf("want one aws:dynamodb record of a NEW_AND_OLD_IMAGES stream: %+v", ev.Records)
				}
				item, err := ddbitem.FromStreamImage(ev.Records[0].Change.NewImage)
				if err != nil {
					t.Fatal(err)
				}
				if strings.Contains(name, "-presence-") {
					p, err := ddbitem.UnmarshalPresence(item)
					if err != nil || p.ThingName != "test_001" || !p.Connected || p.SessionID == "" {
						t.Errorf("NewImage = %+v (%v): want test_001's presence item, connected", p, err)
					}
					break
				}
				c, err := ddbitem.UnmarshalCommand(item)
				if err != nil || c.ThingName != "test_001" || c.Status != fleet.CommandQueued || ev.Records[0].EventName != "INSERT" {
					t.Errorf("NewImage = %+v (%v): want an INSERT of a QUEUED command of test_001", c, err)
				}
			case "api":
				var req events.APIGatewayV2HTTPRequest
				if err := json.Unmarshal(raw, &req); err != nil {
					t.Fatal(err)
				}
				if req.Version != "2.0" || req.RouteKey != "ANY /{proxy+}" || !strings.HasPrefix(req.RawPath, "/devices/test_001") ||
					req.RequestContext.HTTP.Path != req.RawPath || req.RequestContext.Authorizer == nil || req.RequestContext.Authorizer.IAM == nil {
					t.Errorf("HTTP API event = %+v: want payload 2.0 of the template's ANY /{proxy+} route with IAM authorizer context", req)
				}
			default:
				t.Fatalf("events/%s: name does not say its handler (jitr-, ingest-, replicate-, api-, reconcile-, presence-, commands-)", name)
			}
		})
	}
	for _, kind := range []string{"jitr", "ingest", "replicate", "api", "reconcile", "presence", "commands"} {
		if seen[kind] == 0 {
			t.Errorf("no events/%s-*.json fixture", kind)
		}
	}
	if seen["replicate"] < 3 {
		t.Errorf("%d replicate fixtures, want INSERT, MODIFY and REMOVE", seen["replicate"])
	}
}

// TestReconcileFixtureMatchesSchedule: events/reconcile-scheduled.json is
// the Input of the reconciler's schedule with the scheduler's context
// attributes (<aws.scheduler.…>) filled in.
func TestReconcileFixtureMatchesSchedule(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(root(t), "events", "reconcile-scheduled.json"))
	if err != nil {
		t.Fatal(err)
	}
	var fixture map[string]string
	if err := json.Unmarshal(raw, &fixture); err != nil {
		t.Fatal(err)
	}
	for tpl, tr := range translate(t) {
		found := 0
		for _, id := range sortedKeys(tr.Template.Resources) {
			r := tr.Template.Resources[id]
			if r.Type != "AWS::Scheduler::Schedule" || functionOf(tr.Template, prop(r, "Target", "Arn")) != "ReconcileFunction" {
				continue
			}
			found++
			input, _ := prop(r, "Target", "Input").(string)
			var tmpl map[string]string
			if err := json.Unmarshal([]byte(input), &tmpl); err != nil {
				t.Fatalf("%s: %s Input %q is not a JSON object of strings: %v", tpl, id, input, err)
			}
			if !slices.Equal(sortedKeys(tmpl), sortedKeys(fixture)) {
				t.Errorf("%s: %s Input has %v, the fixture %v", tpl, id, sortedKeys(tmpl), sortedKeys(fixture))
			}
			for k, v := range tmpl {
				if strings.HasPrefix(v, "<aws.scheduler.") {
					if fixture[k] == "" || strings.HasPrefix(fixture[k], "<") {
						t.Errorf("%s: fixture %s = %q, want the value the scheduler puts for %s", tpl, k, fixture[k], v)
					}
				} else if fixture[k] != v {
					t.Errorf("%s: fixture %s = %q, the schedule sends %q", tpl, k, fixture[k], v)
				}
			}
		}
		if found != 1 {
			t.Errorf("%s: %d schedules invoke ReconcileFunction, want 1", tpl, found)
		}
	}
}

// TestFixturePKI: the committed device certificate is a valid device of the
// committed intermediate CA for a long time to come.
func TestFixturePKI(t *testing.T) {
	devPEM, _ := loadCert(t, "test_001.crt")
	caPEM, _ := loadCert(t, "intermediate.crt")
	dev, err := fleet.ParseCertificatePEM(devPEM)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := fleet.ParseCertificatePEM(caPEM)
	if err != nil {
		t.Fatal(err)
	}
	for _, at := range []time.Time{time.Now(), time.Now().AddDate(50, 0, 0)} {
		name, err := fleet.ValidateDeviceCertificate(dev, ca, at)
		if err != nil || name != "test_001" {
			t.Errorf("at %s: ValidateDeviceCertificate = %q, %v; want test_001", at.Format(time.DateOnly), name, err)
		}
	}
}
