package deploytest

import (
	"encoding/json"
	"testing"
)

// Example resources of the calls (SubVars: partition aws, region eu-west-1,
// account 123456789012, Application mriot).
const (
	inventoryARN = "arn:aws:dynamodb:eu-west-1:123456789012:table/mriot-device-inventory"
	dataARN      = "arn:aws:dynamodb:eu-west-1:123456789012:table/mriot-data"
	claimsARN    = "arn:aws:dynamodb:eu-west-1:123456789012:table/mriot-jitr-claims"
	certARNEx    = "arn:aws:iot:eu-west-1:123456789012:cert/0123abcd"
	caCertARNEx  = "arn:aws:iot:eu-west-1:123456789012:cacert/4567ef01"
	thingARNEx   = "arn:aws:iot:eu-west-1:123456789012:thing/sensor-1"
	// The API reads every region's registry.
	otherCertARN  = "arn:aws:iot:us-west-2:123456789012:cert/0123abcd"
	otherThingARN = "arn:aws:iot:us-west-2:123456789012:thing/sensor-1"
)

// registryCalls are the IoT calls of the convergence steps jitr and
// replicate share (internal/jitr/steps.go over internal/awsiot).
var registryCalls = []Call{
	{"iot:DescribeCertificate", certARNEx},
	{"iot:UpdateCertificate", certARNEx},
	{"iot:DescribeThing", thingARNEx},
	{"iot:CreateThing", thingARNEx},
	{"iot:DeleteThing", thingARNEx},
	{"iot:AttachThingPrincipal", certARNEx},
	{"iot:DetachThingPrincipal", certARNEx},
	{"iot:ListThingPrincipals", thingARNEx},
	{"iot:AttachPolicy", certARNEx},
	{"iot:DetachPolicy", certARNEx},
	{"iot:ListAttachedPolicies", certARNEx},
}

// functionCalls are the AWS calls each function's code makes
// (internal/awsiot and internal/awsddb methods its handler uses).
var functionCalls = map[string][]Call{
	"JitrFunction": append([]Call{
		{"iot:DescribeCACertificate", caCertARNEx},
		{"dynamodb:GetItem", inventoryARN},    // Inventory.Get
		{"dynamodb:PutItem", inventoryARN},    // Inventory.Create
		{"dynamodb:DeleteItem", inventoryARN}, // Inventory.DeleteVersion (the undo of the inventory write)
		{"dynamodb:PutItem", claimsARN},       // Claims.Claim (conditional put), Claims.Done
		{"dynamodb:DeleteItem", claimsARN},    // Claims.Release (conditional delete)
	}, registryCalls...),
	"ReplicateFunction": append([]Call{
		{"iot:RegisterCertificate", certARNEx},
		{"iot:DeleteCertificate", certARNEx},
		{"iot:UpdateThing", thingARNEx},    // UpdateThingAttributes
		{"dynamodb:GetItem", inventoryARN}, // Inventory.Get
	}, registryCalls...),
	"IngestFunction": {
		{"dynamodb:PutItem", dataARN}, // Telemetry.Put
	},
	"ApiFunction": {
		{"dynamodb:GetItem", inventoryARN}, // Inventory.Get
		{"dynamodb:Scan", inventoryARN},    // Inventory.List
		{"dynamodb:PutItem", inventoryARN}, // Inventory.Update (conditional put)
		{"dynamodb:Query", dataARN},        // Telemetry.Query
		{"iot:DescribeThing", thingARNEx},
		{"iot:DescribeThing", otherThingARN},
		{"iot:ListThingPrincipals", otherThingARN},
		{"iot:DescribeCertificate", otherCertARN},
		{"iot:ListAttachedPolicies", otherCertARN},
	},
	"SetupFunction": {
		{"iot:DescribeEventConfigurations", "*"},
		{"iot:UpdateEventConfigurations", "*"},
		{"iot:DescribeEndpoint", "*"},
		{"dynamodb:DescribeTable", inventoryARN},
	},
}

// TestPoliciesCoverCalls: every function's role allows every call its code
// makes, on the resources it makes it on (a missing grant is an
// AccessDenied on AWS that moto does not show).
func TestPoliciesCoverCalls(t *testing.T) {
	for tpl, tr := range translate(t) {
		for _, p := range CheckGrants(tr.Template, functionCalls) {
			t.Errorf("%s: %s", tpl, p)
		}
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
