package deploytest

import (
	"encoding/json"
	"testing"
)

// Example resources of the calls (SubVars: partition aws, region eu-west-1,
// account 123456789012, Application mriot).
const (
	inventoryARN = "arn:aws:dynamodb:eu-west-1:123456789012:table/mriot-device-inventory"
	// certIndexARN is the inventory's CertificateIndex (ddbitem.InventoryCertificateIndex).
	certIndexARN = "arn:aws:dynamodb:eu-west-1:123456789012:table/mriot-device-inventory/index/CertificateIndex"
	// revocationIndexARN is its RevocationIndex (ddbitem.InventoryRevocationIndex).
	revocationIndexARN = "arn:aws:dynamodb:eu-west-1:123456789012:table/mriot-device-inventory/index/RevocationIndex"
	// retirementIndexARN is its RetirementIndex (ddbitem.InventoryRetirementIndex).
	retirementIndexARN = "arn:aws:dynamodb:eu-west-1:123456789012:table/mriot-device-inventory/index/RetirementIndex"
	dataARN            = "arn:aws:dynamodb:eu-west-1:123456789012:table/mriot-data"
	claimsARN          = "arn:aws:dynamodb:eu-west-1:123456789012:table/mriot-jitr-claims"
	leasesARN          = "arn:aws:dynamodb:eu-west-1:123456789012:table/mriot-device-leases"
	presenceARN        = "arn:aws:dynamodb:eu-west-1:123456789012:table/mriot-presence"
	// connectedIndexARN is the presence table's ConnectedIndex (ddbitem.PresenceConnectedIndex).
	connectedIndexARN = "arn:aws:dynamodb:eu-west-1:123456789012:table/mriot-presence/index/ConnectedIndex"
	// commandsARN is the commands table (internal/workflow/commands).
	commandsARN = "arn:aws:dynamodb:eu-west-1:123456789012:table/mriot-commands"
	// cmdTopicARN is a command topic e/<thing>/cmd/<id> in the function's region.
	cmdTopicARN = "arn:aws:iot:eu-west-1:123456789012:topic/e/sensor-1/cmd/1777636800000-00000000000000a1"
	certARNEx   = "arn:aws:iot:eu-west-1:123456789012:cert/0123abcd"
	caCertARNEx = "arn:aws:iot:eu-west-1:123456789012:cacert/4567ef01"
	thingARNEx  = "arn:aws:iot:eu-west-1:123456789012:thing/sensor-1"
	// The API reads every region's registry and lease table.
	otherCertARN   = "arn:aws:iot:us-west-2:123456789012:cert/0123abcd"
	otherCACertARN = "arn:aws:iot:us-west-2:123456789012:cacert/4567ef01"
	otherThingARN  = "arn:aws:iot:us-west-2:123456789012:thing/sensor-1"
	otherLeasesARN = "arn:aws:dynamodb:us-west-2:123456789012:table/mriot-device-leases"
)

// convergeCalls are the calls of internal/workflow/converge, through which jitr,
// replicate and reconcile change a region's registry (over internal/aws/awsiot
// and internal/aws/awsddb). A run first finishes the obligations another
// function's run left (obligations.go), so each of the three can make any
// of them.
var convergeCalls = []Call{
	// converge.Registry
	{"iot:DescribeCertificate", certARNEx},
	{"iot:RegisterCertificate", certARNEx}, // from the item's PEM: INACTIVE before activation, or REVOKED
	{"iot:UpdateCertificate", certARNEx},
	{"iot:DeleteCertificate", certARNEx}, // a compensation, or an obligation of one
	{"iot:DescribeThing", thingARNEx},
	{"iot:CreateThing", thingARNEx},
	{"iot:DeleteThing", thingARNEx},
	{"iot:AttachThingPrincipal", certARNEx},
	{"iot:DetachThingPrincipal", certARNEx},
	{"iot:ListThingPrincipals", thingARNEx},
	{"iot:AttachPolicy", certARNEx},
	{"iot:DetachPolicy", certARNEx},
	{"iot:ListAttachedPolicies", certARNEx},
	{"iot:DescribeCACertificate", caCertARNEx},
	// converge.Inventory (awsddb.Inventory)
	{"dynamodb:GetItem", inventoryARN},    // Get; Revocation (key "<thing>#revocation")
	{"dynamodb:PutItem", inventoryARN},    // Create, Update (promotion; catching up with the record), Revoke: conditional puts
	{"dynamodb:DeleteItem", inventoryARN}, // DeleteVersion (the undo of the inventory write, or its obligation)
	// converge.Leases (awsddb.Leases)
	{"dynamodb:UpdateItem", leasesARN}, // Acquire, Renew, Note, Release
	{"dynamodb:GetItem", leasesARN},    // Get (the ledger says converged already)
}

// claimsCalls are jitr's claims table (awsddb.Claims).
var claimsCalls = []Call{
	{"dynamodb:PutItem", claimsARN},    // Claims.Claim (conditional put), Claims.Done
	{"dynamodb:DeleteItem", claimsARN}, // Claims.Release (conditional delete)
}

// functionCalls are the AWS calls each function's code makes
// (internal/aws/awsiot and internal/aws/awsddb methods its handler uses).
var functionCalls = map[string][]Call{
	"JitrFunction":      concat(convergeCalls, claimsCalls),
	"ReplicateFunction": convergeCalls,
	"ReconcileFunction": concat(convergeCalls, claimsCalls, []Call{
		// reconcile.Registry's listings
		{"iot:ListThings", "*"},           // mriot's things (attribute managedBy=mriot)
		{"iot:ListCACertificates", "*"},   // the auto-registration CAs
		{"iot:ListCertificatesByCA", "*"}, // their certificates
		// reconcile.Inventory
		{"dynamodb:Scan", inventoryARN},        // List, Revocations
		{"dynamodb:Query", certIndexARN},       // ByCertificate
		{"dynamodb:Query", revocationIndexARN}, // RevokedOn (the sweep of recent revocations)
		{"dynamodb:Query", retirementIndexARN}, // RetiringOn (the retirement sweep)
		// reconcile.Leases
		{"dynamodb:Scan", leasesARN},    // Pending
		{"dynamodb:GetItem", leasesARN}, // LoadCursor (item "#reconcile")
		{"dynamodb:PutItem", leasesARN}, // SaveCursor (conditional put)
	}),
	"IngestFunction": {
		{"dynamodb:PutItem", dataARN}, // Telemetry.Put
	},
	"PresenceFunction": {
		{"dynamodb:UpdateItem", presenceARN}, // Presence.Record (conditional updates of the region's session record)
		{"dynamodb:GetItem", presenceARN},    // Presence.Sessions, Record's read when no update applies
		{"dynamodb:PutItem", presenceARN},    // Presence.Publish (conditional put)
		{"dynamodb:GetItem", inventoryARN},   // Inventory.Get: devices only
	},
	"ApiFunction": concat(apiDriftCalls, []Call{
		{"dynamodb:GetItem", inventoryARN},    // Inventory.Get
		{"dynamodb:Scan", inventoryARN},       // Inventory.List
		{"dynamodb:PutItem", inventoryARN},    // Inventory.Update (conditional put)
		{"dynamodb:Query", dataARN},           // Telemetry.Query
		{"dynamodb:GetItem", presenceARN},     // Presence.Get
		{"dynamodb:Query", connectedIndexARN}, // Presence.Connected
		{"dynamodb:PutItem", commandsARN},     // Commands.Create (conditional put)
		{"dynamodb:Query", commandsARN},       // Commands.Get, Commands.Page
		{"iot:DescribeThing", thingARNEx},
		{"iot:DescribeThing", otherThingARN},
		{"iot:ListThingPrincipals", otherThingARN},
		{"iot:DescribeCertificate", otherCertARN},
		{"iot:ListAttachedPolicies", otherCertARN},
	}),
	"SetupFunction": {
		{"iot:DescribeEventConfigurations", "*"},
		{"iot:UpdateEventConfigurations", "*"},
		{"iot:DescribeEndpoint", "*"},
		{"dynamodb:DescribeTable", inventoryARN},
		{"dynamodb:DescribeTable", presenceARN},
		{"dynamodb:DescribeTable", commandsARN},
	},
	"CommandsFunction": {
		{"dynamodb:Query", commandsARN},      // Commands.Get, Commands.Open
		{"dynamodb:GetItem", commandsARN},    // Commands.Ack's read
		{"dynamodb:PutItem", commandsARN},    // Commands.Claim, the ack record (conditional puts)
		{"dynamodb:DeleteItem", commandsARN}, // Commands.Unclaim (the compensation)
		{"dynamodb:UpdateItem", commandsARN}, // Commands.MarkSent, Ack, Expire (conditional updates)
		{"dynamodb:GetItem", presenceARN},    // Presence.Get
		{"dynamodb:GetItem", inventoryARN},   // Inventory.Get, Revocation
		{"iot:Publish", cmdTopicARN},         // the data plane's Publish of a command
	},
}

// apiDriftCalls are the reads of a drift report (GET
// /regions/{region}/drift): a dry run of the region's reconciler over the
// API's own inventory replica, in any region. A dry run converges nothing,
// takes no lease and saves no position: no write, and of the lease table
// only the Scan of pending obligations.
var apiDriftCalls = []Call{
	{"iot:DescribeThing", otherThingARN},
	{"iot:ListThingPrincipals", otherThingARN},
	{"iot:DescribeCertificate", otherCertARN},
	{"iot:ListAttachedPolicies", otherCertARN},
	{"iot:DescribeCACertificate", otherCACertARN},
	{"iot:DescribeCACertificate", caCertARNEx},
	{"iot:ListThings", "*"},
	{"iot:ListCACertificates", "*"},
	{"iot:ListCertificatesByCA", "*"},
	{"dynamodb:Scan", inventoryARN},    // List, Revocations
	{"dynamodb:GetItem", inventoryARN}, // Get, Revocation
	{"dynamodb:Query", certIndexARN},   // ByCertificate
	{"dynamodb:Scan", leasesARN},       // Pending, in the home region
	{"dynamodb:Scan", otherLeasesARN},  // and in every other
}

// apiNeverCalls are calls the API must not be allowed: a drift report only
// reads, and the API converges nothing.
var apiNeverCalls = []Call{
	{"dynamodb:UpdateItem", leasesARN},
	{"dynamodb:PutItem", otherLeasesARN},
	{"dynamodb:GetItem", otherLeasesARN},
	{"dynamodb:DeleteItem", inventoryARN},
	{"iot:UpdateCertificate", otherCertARN},
	{"iot:DeleteThing", otherThingARN},
	{"iot:RegisterCertificate", "*"},
}

func concat(lists ...[]Call) []Call {
	var out []Call
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

// TestPoliciesCoverCalls: every function's role allows every call its code
// makes, on the resources it makes it on (a missing grant is an
// AccessDenied on AWS that moto does not show).
func TestGlobMatch(t *testing.T) {
	for _, tt := range []struct {
		pattern, s    string
		caseSensitive bool
		want          bool
	}{
		{"iot:*", "iot:DescribeThing", false, true},
		{"IOT:describething", "iot:DescribeThing", false, true}, // IAM actions are case-insensitive
		{"dynamodb:Get*", "dynamodb:GetItem", false, true},
		{"dynamodb:?etItem", "dynamodb:GetItem", false, true},
		{"dynamodb:Get?", "dynamodb:GetItem", false, false},
		{"iot:*", "dynamodb:GetItem", false, false},
		// Resources: case-sensitive; * and ? cross "/" and ":".
		{"arn:aws:dynamodb:*:*:table/mriot-*", certIndexARN, true, true},
		{"arn:aws:dynamodb:eu-west-1:123456789012:table/mriot-device-inventory/index/*", revocationIndexARN, true, true},
		{"arn:aws:dynamodb:eu-west-1:123456789012:table/mriot-device-inventory", certIndexARN, true, false},
		{"arn:aws:iot:eu-west-1:123456789012:thing/sensor-?", thingARNEx, true, true},
		{"arn:aws:iot:eu-west-1:123456789012:thing?sensor-1", thingARNEx, true, true},
		{"arn:aws:iot:eu-west-1:123456789012:THING/*", thingARNEx, true, false},
	} {
		if got := globMatch(tt.pattern, tt.s, tt.caseSensitive); got != tt.want {
			t.Errorf("globMatch(%q, %q, %v) = %v, want %v", tt.pattern, tt.s, tt.caseSensitive, got, tt.want)
		}
	}
}

func TestPoliciesCoverCalls(t *testing.T) {
	for tpl, tr := range translate(t) {
		for _, p := range CheckGrants(tr.Template, functionCalls) {
			t.Errorf("%s: %s", tpl, p)
		}
		role := RoleOf(tr.Template, "ApiFunction")
		for _, c := range apiNeverCalls {
			if Allows(tr.Template, role, c) {
				t.Errorf("%s: ApiFunction may %s on %s; the API only reads there", tpl, c.Action, c.Resource)
			}
		}
	}
}

// TestPoliciesGrantOnlyCalls: every function's own policy grants nothing
// its code does not call (least privilege beyond wildcards: an action on a
// table, or a table, it never uses).
func TestPoliciesGrantOnlyCalls(t *testing.T) {
	for tpl, tr := range translate(t) {
		for _, p := range CheckUnusedGrants(tr.Template, functionCalls) {
			t.Errorf("%s: %s", tpl, p)
		}
	}
}

func TestCheckUnusedGrantsCatchesExtraGrants(t *testing.T) {
	doc := `{"Resources":{
	  "F":{"Type":"AWS::Lambda::Function","Properties":{"Role":{"Fn::GetAtt":["FRole","Arn"]}}},
	  "FRole":{"Type":"AWS::IAM::Role","Properties":{"Policies":[
	    {"PolicyName":"FEventInvokeConfigOnFailureSQSPolicy","PolicyDocument":{"Statement":[{"Effect":"Allow","Action":"sqs:SendMessage","Resource":"q"}]}},
	    {"PolicyName":"FRolePolicy0","PolicyDocument":{"Statement":[
	      {"Effect":"Allow","Action":["dynamodb:GetItem","dynamodb:Scan"],"Resource":{"Fn::Sub":"arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/${Application}-device-inventory"}},
	      {"Effect":"Allow","Action":"dynamodb:GetItem","Resource":{"Fn::Sub":"arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/${Application}-data"}},
	      {"Effect":"Allow","Action":"iot:ListThings","Resource":"*"},
	      {"Effect":"Allow","Action":"iot:DescribeThing","Resource":{"Fn::GetAtt":["X","Arn"]}}]}}]}}}}`
	var tpl Template
	if err := json.Unmarshal([]byte(doc), &tpl); err != nil {
		t.Fatal(err)
	}
	got := CheckUnusedGrants(tpl, map[string][]Call{"F": {{"dynamodb:GetItem", inventoryARN}, {"iot:ListThings", "*"}}})
	// Scan on the inventory, GetItem on the data table, the unresolvable
	// resource; not the SAM destination policy.
	if len(got) != 3 {
		t.Errorf("CheckUnusedGrants = %q, want 3 problems", got)
	}
}

func TestCheckGrantsCatchesMissingGrants(t *testing.T) {
	doc := `{"Resources":{
	  "F":{"Type":"AWS::Lambda::Function","Properties":{"Role":{"Fn::GetAtt":["R","Arn"]}}},
	  "R":{"Type":"AWS::IAM::Role","Properties":{"Policies":[{"PolicyName":"p","PolicyDocument":{"Statement":[
	    {"Effect":"Allow","Action":["dynamodb:GetItem","dynamodb:UpdateItem"],"Resource":{"Fn::Sub":"arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/${Application}-device-inventory"}},
	    {"Effect":"Allow","Action":"iot:DescribeThing","Resource":{"Fn::Sub":"arn:${AWS::Partition}:iot:*:${AWS::AccountId}:thing/*"}},
	    {"Effect":"Allow","Action":"iot:ListAttachedPolicies","Resource":"*"}]}}]}}}}`
	var tpl Template
	if err := json.Unmarshal([]byte(doc), &tpl); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		call Call
		want bool
	}{
		{Call{"dynamodb:GetItem", inventoryARN}, true},
		{Call{"DynamoDB:getitem", inventoryARN}, true},
		{Call{"dynamodb:PutItem", inventoryARN}, false},
		{Call{"dynamodb:GetItem", dataARN}, false},
		{Call{"iot:DescribeThing", otherThingARN}, true},
		{Call{"iot:DescribeThing", otherCertARN}, false},
		{Call{"iot:ListAttachedPolicies", certARNEx}, true},
	}
	for _, tt := range tests {
		if got := Allows(tpl, "R", tt.call); got != tt.want {
			t.Errorf("Allows(%v) = %v, want %v", tt.call, got, tt.want)
		}
	}
	if got := CheckGrants(tpl, map[string][]Call{"F": {{"dynamodb:PutItem", inventoryARN}}, "G": nil}); len(got) != 2 {
		t.Errorf("CheckGrants = %q, want a missing grant and a missing role", got)
	}
}
