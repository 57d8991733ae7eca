package deploytest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	iottypes "github.com/aws/aws-sdk-go-v2/service/iot/types"

	"github.com/mriot/mriot/internal/aws/ddbitem"
	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/emulator/policy"
	"github.com/mriot/mriot/internal/testkit/motoserver"
	"github.com/mriot/mriot/internal/testkit/rie"
	"github.com/mriot/mriot/internal/testkit/tier"
	"github.com/mriot/mriot/internal/workflow/converge"
	"github.com/mriot/mriot/internal/workflow/reconcile"
)

// The functions run under the RIE cannot send motoserver's per-test account
// header, so they (and these tests' own clients) use moto's default account.
// Each test works in its own region, which isolates it as well.
const motoAccount = "123456789012"

var gobinDir string

func TestMain(m *testing.M) {
	// moto as AWS behaves where these tests depend on it (testdata/moto_aws.py),
	// unless the caller chose a python for moto.
	if _, set := os.LookupEnv(motoserver.PythonEnv); !set {
		if wrapper, err := filepath.Abs(filepath.Join("testdata", "moto-python")); err == nil {
			os.Setenv(motoserver.PythonEnv, wrapper)
		}
	}
	code := motoserver.Main(m)
	if gobinDir != "" {
		os.RemoveAll(gobinDir)
	}
	os.Exit(code)
}

var (
	rieOnce sync.Once
	rieBin  string
	rieErr  error
)

// emulator returns aws-lambda-rie: bin/tools of the repository, PATH, or a
// go install into a temporary GOBIN. It skips (fails under CI=true) when it
// cannot be had.
func emulator(t *testing.T) string {
	t.Helper()
	dir := root(t)
	rieOnce.Do(func() {
		if p, err := rie.Find(filepath.Join(dir, "bin", "tools")); err == nil {
			rieBin = p
			return
		}
		gobinDir, rieErr = os.MkdirTemp("", "mriot-rie-")
		if rieErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		rieBin, rieErr = rie.Install(ctx, gobinDir)
	})
	if errors.Is(rieErr, rie.ErrNotInstalled) {
		tier.Require(t, "%v", rieErr)
	}
	if rieErr != nil {
		t.Fatal(rieErr)
	}
	return rieBin
}

// motoConfig is an SDK configuration for moto's default account.
func motoConfig(s *motoserver.Server, region string) aws.Config {
	return aws.Config{
		Region:       region,
		Credentials:  credentials.NewStaticCredentialsProvider("AKIDMOTOTEST", "moto-test-secret", ""),
		BaseEndpoint: aws.String(s.URL),
	}
}

// startFunction builds ./functions/<fn> for the host and runs it under the
// RIE with its variables from events/env.json, talking to moto in region.
func startFunction(t *testing.T, fn, region string, s *motoserver.Server, extra map[string]string) *rie.Emulator {
	t.Helper()
	bin := emulator(t)
	dir := root(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bootstrap, err := rie.Build(ctx, dir, fn, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	env, err := rie.LoadEnv(filepath.Join(dir, "events", "env.json"), rie.LogicalID(fn))
	if err != nil {
		t.Fatal(err)
	}
	maps.Copy(env, map[string]string{
		"AWS_REGION": region, "AWS_DEFAULT_REGION": region, "AWS_ENDPOINT_URL": s.URL,
		"AWS_ACCESS_KEY_ID": "AKIDMOTOTEST", "AWS_SECRET_ACCESS_KEY": "moto-test-secret", "AWS_SESSION_TOKEN": "",
		"AWS_PROFILE": "", "AWS_EC2_METADATA_DISABLED": "true", "AWS_LAMBDA_FUNCTION_NAME": fn,
	})
	maps.Copy(env, extra)
	var logs io.Writer
	if testing.Verbose() {
		logs = os.Stderr
	}
	em, err := rie.Start(ctx, bin, bootstrap, env, logs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		em.Stop()
		if t.Failed() {
			t.Logf("%s output:\n%s", fn, em.Logs())
		}
	})
	return em
}

func invokeFixture(t *testing.T, em *rie.Emulator, fixture string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root(t), "events", fixture))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	resp, err := em.Invoke(ctx, raw)
	if err != nil {
		t.Fatalf("invoke with events/%s: %v (response %s)", fixture, err, resp)
	}
	return resp
}

// invokeRaw invokes the function with payload and fails on a function error.
func invokeRaw(t *testing.T, em *rie.Emulator, payload []byte) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	resp, err := em.Invoke(ctx, payload)
	if err != nil {
		t.Fatalf("invoke: %v (response %s)", err, resp)
	}
	return resp
}

// apiRequest is events/api-get-device.json (an HTTP API payload 2.0
// request) for another method, path and query.
func apiRequest(t *testing.T, method, path, query string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root(t), "events", "api-get-device.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ev events.APIGatewayV2HTTPRequest
	if err := json.Unmarshal(raw, &ev); err != nil {
		t.Fatal(err)
	}
	ev.RawPath, ev.RawQueryString = path, query
	ev.RequestContext.HTTP.Method, ev.RequestContext.HTTP.Path = method, path
	ev.QueryStringParameters = nil
	if query != "" {
		ev.QueryStringParameters = map[string]string{}
		for kv := range strings.SplitSeq(query, "&") {
			k, v, _ := strings.Cut(kv, "=")
			ev.QueryStringParameters[k] = v
		}
	}
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// world arranges a region of moto the way the stack leaves it: the tables
// (the regional ones too: jitr's claims table and the device lease table),
// the device policy and the CA registered for JITR.
func world(t *testing.T, s *motoserver.Server, region string) aws.Config {
	t.Helper()
	cfg := motoConfig(s, region)
	env, err := rie.LoadEnv(filepath.Join(root(t), "events", "env.json"), "ApiFunction")
	if err != nil {
		t.Fatal(err)
	}
	motoserver.CreateTables(t, cfg, env["INVENTORY_TABLE"], env["DATA_TABLE"])
	jitrEnv, err := rie.LoadEnv(filepath.Join(root(t), "events", "env.json"), "JitrFunction")
	if err != nil {
		t.Fatal(err)
	}
	motoserver.CreateClaimsTable(t, cfg, jitrEnv["CLAIMS_TABLE"])
	motoserver.CreateLeasesTable(t, cfg, jitrEnv["LEASES_TABLE"])
	motoserver.CreatePolicy(t, cfg, env["DEVICE_POLICY_NAME"], policy.DevicePolicy(region, motoAccount))
	caPEM, caID := loadCert(t, "intermediate.crt")
	if got := motoserver.RegisterCA(t, cfg, caPEM); got != caID {
		t.Fatalf("moto registered the CA as %s, want %s", got, caID)
	}
	return cfg
}

// registry reads what a region's IoT registry holds for test_001.
type registry struct {
	thing      bool
	status     iottypes.CertificateStatus
	principals []string
	policies   []string
}

func readRegistry(t *testing.T, cfg aws.Config, certID string) registry {
	t.Helper()
	ctx := context.Background()
	c := iot.NewFromConfig(cfg)
	var r registry
	_, err := c.DescribeThing(ctx, &iot.DescribeThingInput{ThingName: aws.String("test_001")})
	var nf *iottypes.ResourceNotFoundException
	switch {
	case err == nil:
		r.thing = true
		out, err := c.ListThingPrincipals(ctx, &iot.ListThingPrincipalsInput{ThingName: aws.String("test_001")})
		if err != nil {
			t.Fatalf("list thing principals: %v", err)
		}
		r.principals = out.Principals
	case !errors.As(err, &nf):
		t.Fatalf("describe thing: %v", err)
	}
	cert, err := c.DescribeCertificate(ctx, &iot.DescribeCertificateInput{CertificateId: aws.String(certID)})
	switch {
	case err == nil:
		r.status = cert.CertificateDescription.Status
		pols, err := c.ListAttachedPolicies(ctx, &iot.ListAttachedPoliciesInput{Target: cert.CertificateDescription.CertificateArn})
		if err != nil {
			t.Fatalf("list attached policies: %v", err)
		}
		for _, p := range pols.Policies {
			r.policies = append(r.policies, aws.ToString(p.PolicyName))
		}
	case !errors.As(err, &nf):
		t.Fatalf("describe certificate: %v", err)
	}
	return r
}

func certARN(region, id string) string {
	return "arn:aws:iot:" + region + ":" + motoAccount + ":cert/" + id
}

func TestJitrUnderRIE(t *testing.T) {
	s := motoserver.Start(t)
	const region = "eu-west-1"
	cfg := world(t, s, region)
	devPEM, devID := loadCert(t, "test_001.crt")
	caPEM, _ := loadCert(t, "intermediate.crt")
	// What JITR leaves behind when test_001 first connects.
	reg, err := iot.NewFromConfig(cfg).RegisterCertificate(context.Background(), &iot.RegisterCertificateInput{
		CertificatePem: aws.String(devPEM), CaCertificatePem: aws.String(caPEM), Status: iottypes.CertificateStatusPendingActivation,
	})
	if err != nil {
		t.Fatalf("register the device certificate PENDING_ACTIVATION: %v", err)
	}
	if aws.ToString(reg.CertificateId) != devID {
		t.Fatalf("moto's certificate id %s is not the fixture's %s", aws.ToString(reg.CertificateId), devID)
	}
	if got := readRegistry(t, cfg, devID); got.thing || got.status != iottypes.CertificateStatusPendingActivation {
		t.Fatalf("before: %+v, want no thing and a PENDING_ACTIVATION certificate", got)
	}

	em := startFunction(t, "jitr", region, s, nil)
	invokeFixture(t, em, "jitr-registered.json")

	got := readRegistry(t, cfg, devID)
	if !got.thing || got.status != iottypes.CertificateStatusActive ||
		!slices.Contains(got.principals, certARN(region, devID)) || !slices.Contains(got.policies, "mriot-device") {
		t.Fatalf("after jitr: %+v, want thing test_001 with the certificate attached, ACTIVE, with policy mriot-device", got)
	}
	item, err := dynamodb.NewFromConfig(cfg).GetItem(context.Background(), &dynamodb.GetItemInput{
		TableName: aws.String("mriot-device-inventory"), Key: ddbitem.DeviceKey("test_001"), ConsistentRead: aws.Bool(true),
	})
	if err != nil || item.Item == nil {
		t.Fatalf("inventory item of test_001: %v, %v", item, err)
	}
	d, err := ddbitem.UnmarshalDevice(item.Item)
	if err != nil {
		t.Fatal(err)
	}
	if d.Status != fleet.StatusActive || d.CertificateID != devID || d.CertificatePEM == "" || d.OriginRegion != region || d.Version < 1 {
		t.Errorf("inventory item = %+v, want ACTIVE, certificate %s with its PEM, origin %s", d, devID, region)
	}
	// The run took test_001's lease in the region's lease table (LEASES_TABLE
	// of events/env.json), released it and left the ledger: converged to
	// the item it wrote, with its certificate.
	if raw, ok := readLease(t, cfg, ddbitem.LeaseKey("test_001")); !ok {
		t.Error("no lease item of test_001")
	} else if l, err := ddbitem.UnmarshalLease(raw); err != nil || l.Owner != "" || l.Fence < 1 ||
		!l.Ledger.Converged.Matches(d) || !slices.Contains(l.Ledger.Certificates, devID) || len(l.Ledger.Obligations) != 0 {
		t.Errorf("lease of test_001 = %+v (%v), want released, converged to version %d with certificate %s, no obligations", l, err, d.Version, devID)
	}
	// The run claimed the registration in the claims table (CLAIMS_TABLE of
	// events/env.json) and marked it done: other instances drop its
	// duplicates without a registry call.
	claim, err := dynamodb.NewFromConfig(cfg).GetItem(context.Background(), &dynamodb.GetItemInput{
		TableName: aws.String("mriot-jitr-claims"), Key: ddbitem.ClaimKey(devID), ConsistentRead: aws.Bool(true),
	})
	if err != nil || claim.Item == nil {
		t.Fatalf("claims item of %s: %v, %v", devID, claim, err)
	}
	c, err := ddbitem.UnmarshalClaim(claim.Item)
	if err != nil {
		t.Fatal(err)
	}
	// The fixture's certificateRegistrationTimestamp is null.
	if c.State != ddbitem.ClaimStateDone || c.Registered != "" || !c.ExpiresAt.After(time.Now()) {
		t.Errorf("claims item = %+v, want DONE for the null registration, expiring in the future", c)
	}
}

// putInventory writes the NewImage of a replicate fixture, as the origin
// region's jitr (through the global table) would have.
func putInventory(t *testing.T, cfg aws.Config, fixture string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root(t), "events", fixture))
	if err != nil {
		t.Fatal(err)
	}
	var ev events.EventBridgeEvent
	var rec events.DynamoDBEventRecord
	if err := json.Unmarshal(raw, &ev); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(ev.Detail, &rec); err != nil {
		t.Fatal(err)
	}
	db := dynamodb.NewFromConfig(cfg)
	if rec.EventName == "REMOVE" {
		if _, err := db.DeleteItem(context.Background(), &dynamodb.DeleteItemInput{
			TableName: aws.String("mriot-device-inventory"), Key: ddbitem.DeviceKey("test_001"),
		}); err != nil {
			t.Fatal(err)
		}
		return
	}
	item, err := ddbitem.FromStreamImage(rec.Change.NewImage)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.PutItem(context.Background(), &dynamodb.PutItemInput{TableName: aws.String("mriot-device-inventory"), Item: item}); err != nil {
		t.Fatal(err)
	}
}

func TestReplicateUnderRIE(t *testing.T) {
	s := motoserver.Start(t)
	const region = "us-west-2" // the fixtures' stream region; their items come from eu-west-1
	cfg := world(t, s, region)
	_, devID := loadCert(t, "test_001.crt")
	em := startFunction(t, "replicate", region, s, nil)

	putInventory(t, cfg, "replicate-insert.json")
	invokeFixture(t, em, "replicate-insert.json")
	got := readRegistry(t, cfg, devID)
	if !got.thing || got.status != iottypes.CertificateStatusActive ||
		!slices.Contains(got.principals, certARN(region, devID)) || !slices.Contains(got.policies, "mriot-device") {
		t.Fatalf("after INSERT: %+v, want the certificate registered ACTIVE, thing test_001, attached, policy mriot-device", got)
	}

	if raw, ok := readLease(t, cfg, ddbitem.LeaseKey("test_001")); !ok {
		t.Error("no lease item of test_001 after INSERT")
	} else if l, err := ddbitem.UnmarshalLease(raw); err != nil || l.Owner != "" || l.Ledger.Converged.Version < 1 ||
		l.Ledger.Converged.CertificateID != devID {
		t.Errorf("lease of test_001 after INSERT = %+v (%v), want released and converged to the item", l, err)
	}

	putInventory(t, cfg, "replicate-modify.json")
	invokeFixture(t, em, "replicate-modify.json")
	if got := readRegistry(t, cfg, devID); got.status != iottypes.CertificateStatusRevoked {
		t.Fatalf("after MODIFY to REVOKED: %+v, want the certificate REVOKED", got)
	}

	putInventory(t, cfg, "replicate-remove.json")
	invokeFixture(t, em, "replicate-remove.json")
	if got := readRegistry(t, cfg, devID); got.thing {
		t.Fatalf("after REMOVE: %+v, want thing test_001 gone", got)
	}
}

func TestIngestUnderRIE(t *testing.T) {
	s := motoserver.Start(t)
	const region = "ap-southeast-2"
	cfg := world(t, s, region)
	em := startFunction(t, "ingest", region, s, nil)
	before := time.Now().Truncate(time.Second)
	invokeFixture(t, em, "ingest-telemetry.json")
	after := time.Now()

	raw, err := os.ReadFile(filepath.Join(root(t), "events", "ingest-telemetry.json"))
	if err != nil {
		t.Fatal(err)
	}
	ev, err := fleet.ParseTelemetryEvent(raw, 0)
	if err != nil {
		t.Fatal(err)
	}
	out, err := dynamodb.NewFromConfig(cfg).Query(context.Background(), &dynamodb.QueryInput{
		TableName:                 aws.String("mriot-data"),
		KeyConditionExpression:    aws.String("PK = :pk"),
		ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":pk": &ddbtypes.AttributeValueMemberS{Value: "test_001"}},
		ConsistentRead:            aws.Bool(true),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Items) != 1 {
		t.Fatalf("data items of test_001 = %d, want 1", len(out.Items))
	}
	m, err := ddbitem.UnmarshalMessage(out.Items[0])
	if err != nil {
		t.Fatal(err)
	}
	if m.SortKey != fleet.SortKey(ev.TS, ev.ID) || m.Region != region || !bytes.Equal(m.Payload, ev.Message) || m.Timestamp != ev.TS {
		t.Errorf("stored %+v, want SK %s, region %s, message %s", m, fleet.SortKey(ev.TS, ev.ID), region, ev.Message)
	}
	const retention = 30 * 24 * time.Hour // DATA_RETENTION_DAYS of events/env.json
	if m.ExpiresAt.Before(before.Add(retention)) || m.ExpiresAt.After(after.Add(retention)) {
		t.Errorf("ExpiresAt = %s, want now + 30 days", m.ExpiresAt)
	}
}

// TestSetupUnderRIE runs the setup custom resource's bootstrap under the RIE
// with CloudFormation requests and checks the response it sends to the
// pre-signed URL (moto has no IoT event configurations, so the requests are
// the ones that need no AWS call: a refused region and a delete).
func TestSetupUnderRIE(t *testing.T) {
	s := motoserver.Start(t)
	type cfnResponse struct {
		Status, Reason, PhysicalResourceId, RequestId string
	}
	responses := make(chan cfnResponse, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var resp cfnResponse
		if err := json.NewDecoder(r.Body).Decode(&resp); err != nil || r.Method != http.MethodPut {
			t.Errorf("custom resource response: %s %v", r.Method, err)
		}
		responses <- resp
	}))
	defer srv.Close()
	em := startFunction(t, "setup", "eu-north-1", s, map[string]string{"LOG_LEVEL": "info"})
	request := func(rt, id string, regions []string) []byte {
		b, _ := json.Marshal(map[string]any{
			"RequestType": rt, "RequestId": id, "ResponseURL": srv.URL + "/response", "ResourceType": "Custom::MriotSetup",
			"LogicalResourceId": "Setup", "StackId": "arn:aws:cloudformation:eu-north-1:" + motoAccount + ":stack/mriot/1",
			"PhysicalResourceId": "mriot-setup-eu-north-1-mriot-device-inventory",
			"ResourceProperties": map[string]any{"ServiceToken": "x", "InventoryTableName": "mriot-device-inventory", "Regions": regions, "EventTypes": []string{"CERTIFICATE"}},
		})
		return b
	}
	tests := []struct {
		rt, id     string
		regions    []string
		wantStatus string
		wantReason string
	}{
		{"Create", "req-create", []string{"eu-west-1", "us-west-2"}, "FAILED", "eu-north-1 is not in Regions"},
		{"Delete", "req-delete", []string{"eu-west-1", "eu-north-1"}, "SUCCESS", ""},
	}
	for _, tt := range tests {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if _, err := em.Invoke(ctx, request(tt.rt, tt.id, tt.regions)); err != nil {
			cancel()
			t.Fatalf("%s: %v", tt.rt, err)
		}
		cancel()
		select {
		case r := <-responses:
			if r.Status != tt.wantStatus || r.RequestId != tt.id || !strings.Contains(r.Reason, tt.wantReason) || r.PhysicalResourceId == "" {
				t.Errorf("%s response = %+v, want %s with reason containing %q", tt.rt, r, tt.wantStatus, tt.wantReason)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no response sent to CloudFormation", tt.rt)
		}
	}
}

func TestApiUnderRIE(t *testing.T) {
	s := motoserver.Start(t)
	// The api's home region. REGIONS names only it: the regions of
	// events/env.json are other tests' worlds in the same moto account.
	const region = "ca-central-1"
	cfg := world(t, s, region)
	_, devID := loadCert(t, "test_001.crt")
	putInventory(t, cfg, "replicate-insert.json")
	em := startFunction(t, "api", region, s, map[string]string{"REGIONS": region})

	type response struct {
		StatusCode int    `json:"statusCode"`
		Body       string `json:"body"`
	}
	call := func(fixture string) response {
		t.Helper()
		var r response
		if err := json.Unmarshal(invokeFixture(t, em, fixture), &r); err != nil {
			t.Fatalf("%s: response is not an HTTP API response: %v", fixture, err)
		}
		return r
	}
	r := call("api-get-device.json")
	var view struct {
		ThingName string `json:"thingName"`
		Status    string `json:"status"`
	}
	if err := json.Unmarshal([]byte(r.Body), &view); r.StatusCode != http.StatusOK || err != nil ||
		!strings.Contains(r.Body, "test_001") || !strings.Contains(r.Body, "ACTIVE") {
		t.Fatalf("GET /devices/test_001 = %d %s (%v), want 200 with the ACTIVE device", r.StatusCode, r.Body, err)
	}

	// The drift report of the region (a dry run of its reconciler over the
	// API's replica and the region's lease table), one check at a time: the
	// item of test_001 names a certificate and a thing this region's
	// registry does not have (the item was put, never replicated here).
	var drift reconcile.Report
	r = response{}
	if err := json.Unmarshal(invokeRaw(t, em, apiRequest(t, "GET", "/regions/"+region+"/drift", "limit=1")), &r); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(r.Body), &drift); r.StatusCode != http.StatusOK || err != nil {
		t.Fatalf("GET /regions/%s/drift?limit=1 = %d %s (%v), want 200 with a report", region, r.StatusCode, r.Body, err)
	}
	kinds := map[string]bool{}
	for _, f := range drift.Findings {
		if f.ThingName == "test_001" && !f.Repaired {
			kinds[f.Kind] = true
		}
	}
	if !drift.DryRun || drift.Region != region || drift.Checked != 1 || drift.Complete || drift.Next == "" ||
		!kinds[converge.DriftCertificateMissing] || !kinds[converge.DriftThingMissing] {
		t.Errorf("drift report %+v, want a dry run that checked test_001, found its certificate and thing missing, and goes on", drift)
	}
	if got := readRegistry(t, cfg, devID); got.thing || got.status != "" {
		t.Errorf("the drift report changed the registry: %+v", got)
	}
	if _, ok := readLease(t, cfg, ddbitem.ReconcileCursorKey()); ok {
		t.Error("the drift report saved a reconciler position")
	}

	if r := call("api-revoke-device.json"); r.StatusCode != http.StatusOK && r.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /devices/test_001/revoke = %d %s, want 200 or 202", r.StatusCode, r.Body)
	}
	item, err := dynamodb.NewFromConfig(cfg).GetItem(context.Background(), &dynamodb.GetItemInput{
		TableName: aws.String("mriot-device-inventory"), Key: ddbitem.DeviceKey("test_001"), ConsistentRead: aws.Bool(true),
	})
	if err != nil || item.Item == nil {
		t.Fatalf("inventory item of test_001: %v", err)
	}
	d, err := ddbitem.UnmarshalDevice(item.Item)
	if err != nil {
		t.Fatal(err)
	}
	if d.Status != fleet.StatusRevoked || d.Version != 2 {
		t.Errorf("after revoke: status %s version %d, want REVOKED version 2", d.Status, d.Version)
	}
}

// readLease reads the item of key in a region's lease table (LEASES_TABLE
// of events/env.json): a device's lease, or the reconciler's position; ok is
// false when there is none.
func readLease(t *testing.T, cfg aws.Config, key map[string]ddbtypes.AttributeValue) (map[string]ddbtypes.AttributeValue, bool) {
	t.Helper()
	out, err := dynamodb.NewFromConfig(cfg).GetItem(context.Background(), &dynamodb.GetItemInput{
		TableName: aws.String("mriot-device-leases"), Key: key, ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		t.Fatalf("lease table item %v: %v", key, err)
	}
	return out.Item, len(out.Item) > 0
}

// TestReconcileUnderRIE: test_001 is onboarded by jitr's own bootstrap, then
// its thing is deleted and its policy detached behind the system's back, and
// a thing mriot created is left without an inventory item (a run that
// crashed before its compensation). One scheduled invocation of the
// reconcile bootstrap repairs both.
func TestReconcileUnderRIE(t *testing.T) {
	s := motoserver.Start(t)
	const region = "eu-central-1"
	cfg := world(t, s, region)
	ctx := context.Background()
	c := iot.NewFromConfig(cfg)
	devPEM, devID := loadCert(t, "test_001.crt")
	caPEM, _ := loadCert(t, "intermediate.crt")
	if _, err := c.RegisterCertificate(ctx, &iot.RegisterCertificateInput{
		CertificatePem: aws.String(devPEM), CaCertificatePem: aws.String(caPEM), Status: iottypes.CertificateStatusPendingActivation,
	}); err != nil {
		t.Fatalf("register the device certificate PENDING_ACTIVATION: %v", err)
	}
	invokeFixture(t, startFunction(t, "jitr", region, s, nil), "jitr-registered.json")
	if got := readRegistry(t, cfg, devID); !got.thing || got.status != iottypes.CertificateStatusActive || !slices.Contains(got.policies, "mriot-device") {
		t.Fatalf("after jitr: %+v, want test_001 onboarded", got)
	}

	// Behind the system's back: the thing deleted (its principal detached
	// first, as IoT requires) and the device policy detached.
	arn := certARN(region, devID)
	if _, err := c.DetachThingPrincipal(ctx, &iot.DetachThingPrincipalInput{ThingName: aws.String("test_001"), Principal: aws.String(arn)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteThing(ctx, &iot.DeleteThingInput{ThingName: aws.String("test_001")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DetachPolicy(ctx, &iot.DetachPolicyInput{PolicyName: aws.String("mriot-device"), Target: aws.String(arn)}); err != nil {
		t.Fatal(err)
	}
	// A stray thing mriot created, whose device has no inventory item.
	if _, err := c.CreateThing(ctx, &iot.CreateThingInput{ThingName: aws.String("stray_001"), AttributePayload: &iottypes.AttributePayload{
		Attributes: map[string]string{converge.ManagedByAttribute: converge.ManagedBy, converge.CreatedByAttribute: "jitr/" + region + "/crashed"},
	}}); err != nil {
		t.Fatal(err)
	}
	if got := readRegistry(t, cfg, devID); got.thing || slices.Contains(got.policies, "mriot-device") {
		t.Fatalf("drift not in place: %+v", got)
	}

	// Whether this moto lists the CA certificates (the certificates phase
	// depends on it; see below).
	_, caListErr := c.ListCACertificates(ctx, &iot.ListCACertificatesInput{})

	em := startFunction(t, "reconcile", region, s, map[string]string{"AWS_LAMBDA_FUNCTION_TIMEOUT": "300"})
	raw, err := os.ReadFile(filepath.Join(root(t), "events", "reconcile-scheduled.json"))
	if err != nil {
		t.Fatal(err)
	}
	ictx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	resp, invokeErr := em.Invoke(ictx, raw)

	// The earlier phases repaired the drift, whatever the certificates phase
	// did: the thing is back with the certificate and the policy attached,
	// the certificate still ACTIVE, and the stray thing is gone.
	got := readRegistry(t, cfg, devID)
	if !got.thing || got.status != iottypes.CertificateStatusActive || !slices.Contains(got.principals, arn) || !slices.Contains(got.policies, "mriot-device") {
		t.Errorf("after reconcile: %+v, want thing test_001 back with the ACTIVE certificate and policy mriot-device attached", got)
	}
	var nf *iottypes.ResourceNotFoundException
	if _, err := c.DescribeThing(ctx, &iot.DescribeThingInput{ThingName: aws.String("stray_001")}); !errors.As(err, &nf) {
		t.Errorf("stray thing after reconcile: %v, want it removed (ResourceNotFoundException)", err)
	}
	// Each repair was counted (EMF lines on stdout, CloudWatch metrics on AWS).
	logs := em.Logs()
	for _, kind := range []string{converge.DriftThingMissing, converge.DriftPolicyDetached, reconcile.DriftOrphanThing} {
		if !emfCounted(logs, "DriftRepaired", kind) {
			t.Errorf("no DriftRepaired metric with Kind %s in the function's output", kind)
		}
	}
	if l, ok := readLease(t, cfg, ddbitem.LeaseKey("test_001")); !ok || l[ddbitem.AttrOwner] != nil {
		t.Errorf("lease of test_001 after reconcile: %v, want an item, released", l)
	}

	// The certificates phase walks the CA certificates. moto deviation: moto
	// does not implement ListCACertificates (an HTTP 500 where AWS lists the
	// region's CAs), so on moto the phase fails: the invocation fails (its
	// event goes to the on-failure queue on AWS), its log says that the
	// certificates phase failed, and the position saved in the lease table
	// stays at the certificates phase, where the next invocation resumes.
	cursor, ok := readLease(t, cfg, ddbitem.ReconcileCursorKey())
	if !ok {
		t.Fatal("no reconciler position saved in the lease table")
	}
	pos, err := ddbitem.UnmarshalReconcileCursor(cursor)
	if err != nil {
		t.Fatal(err)
	}
	if caListErr != nil {
		var fe *rie.FunctionError
		if !errors.As(invokeErr, &fe) || !strings.Contains(fe.Message, "list CA certificates") {
			t.Fatalf("invocation on moto without ListCACertificates: %v (%s), want a function error naming the CA listing", invokeErr, resp)
		}
		if !strings.Contains(logs, `"msg":"reconcile finished"`) || !strings.Contains(logs, "list CA certificates") {
			t.Errorf("the log does not say that the certificates phase failed:\n%s", logs)
		}
		if pos.Phase != reconcile.PhaseCertificates || pos.Pass != 1 {
			t.Errorf("saved position %+v, want pass 1 at phase %s", pos, reconcile.PhaseCertificates)
		}
		return
	}
	// A moto that lists CA certificates: the pass completes.
	if invokeErr != nil {
		t.Fatalf("invoke: %v (%s)", invokeErr, resp)
	}
	var rep reconcile.Report
	if err := json.Unmarshal(resp, &rep); err != nil || !rep.Complete || rep.Unrepaired() != 0 {
		t.Errorf("report %s (%v), want a complete pass with nothing unrepaired", resp, err)
	}
	if pos.Phase != "" || pos.Pass != 1 {
		t.Errorf("saved position %+v, want pass 1 complete", pos)
	}
}

// emfCounted reports whether an EMF line of logs counts metric with the
// Kind dimension kind.
func emfCounted(logs, metric, kind string) bool {
	for line := range strings.SplitSeq(logs, "\n") {
		i := strings.Index(line, "{")
		if i < 0 {
			continue
		}
		var doc map[string]any
		if json.Unmarshal([]byte(line[i:]), &doc) != nil || doc["_aws"] == nil {
			continue
		}
		if v, ok := doc[metric].(float64); ok && v > 0 && doc["Kind"] == kind {
			return true
		}
	}
	return false
}
