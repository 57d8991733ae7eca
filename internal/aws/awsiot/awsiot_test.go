package awsiot

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/aws-sdk-go-v2/service/iot/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/mriot/mriot/internal/core/fleet"
)

// fakeClient answers every call with err when set; otherwise with canned
// outputs. It records the inputs it was given.
type fakeClient struct {
	err        error
	inputs     []any
	principals [][]string // pages of ListThingPrincipals
	policies   [][]string // pages of ListAttachedPolicies
	things     [][]string // pages of ListThings (thing names)
	cas        [][]string // pages of ListCACertificates (ids)
	byCA       [][]string // pages of ListCertificatesByCA (ids)
}

// created is the creationDate the fake gives every certificate.
var created = time.Date(2026, 3, 1, 12, 30, 0, 0, time.UTC)

func (f *fakeClient) call(in any) error { f.inputs = append(f.inputs, in); return f.err }

func (f *fakeClient) RegisterCertificate(_ context.Context, in *iot.RegisterCertificateInput, _ ...func(*iot.Options)) (*iot.RegisterCertificateOutput, error) {
	if err := f.call(in); err != nil {
		return nil, err
	}
	return &iot.RegisterCertificateOutput{CertificateId: aws.String("cid"), CertificateArn: aws.String("arn:cert/cid")}, nil
}
func (f *fakeClient) RegisterCACertificate(_ context.Context, in *iot.RegisterCACertificateInput, _ ...func(*iot.Options)) (*iot.RegisterCACertificateOutput, error) {
	if err := f.call(in); err != nil {
		return nil, err
	}
	return &iot.RegisterCACertificateOutput{CertificateId: aws.String("caid"), CertificateArn: aws.String("arn:cacert/caid")}, nil
}
func (f *fakeClient) DescribeCertificate(_ context.Context, in *iot.DescribeCertificateInput, _ ...func(*iot.Options)) (*iot.DescribeCertificateOutput, error) {
	if err := f.call(in); err != nil {
		return nil, err
	}
	return &iot.DescribeCertificateOutput{CertificateDescription: &types.CertificateDescription{
		CertificateId: in.CertificateId, CertificateArn: aws.String("arn:cert/" + *in.CertificateId),
		CertificatePem: aws.String("PEM"), CaCertificateId: aws.String("caid"), Status: types.CertificateStatusRevoked,
		CreationDate: aws.Time(created),
	}}, nil
}
func (f *fakeClient) DescribeCACertificate(_ context.Context, in *iot.DescribeCACertificateInput, _ ...func(*iot.Options)) (*iot.DescribeCACertificateOutput, error) {
	if err := f.call(in); err != nil {
		return nil, err
	}
	return &iot.DescribeCACertificateOutput{CertificateDescription: &types.CACertificateDescription{
		CertificateId: in.CertificateId, CertificateArn: aws.String("arn:cacert/" + *in.CertificateId),
		CertificatePem: aws.String("CAPEM"), Status: types.CACertificateStatusActive,
		AutoRegistrationStatus: types.AutoRegistrationStatusEnable,
	}}, nil
}
func (f *fakeClient) UpdateCertificate(_ context.Context, in *iot.UpdateCertificateInput, _ ...func(*iot.Options)) (*iot.UpdateCertificateOutput, error) {
	return &iot.UpdateCertificateOutput{}, f.call(in)
}
func (f *fakeClient) DeleteCertificate(_ context.Context, in *iot.DeleteCertificateInput, _ ...func(*iot.Options)) (*iot.DeleteCertificateOutput, error) {
	return &iot.DeleteCertificateOutput{}, f.call(in)
}
func (f *fakeClient) DescribeThing(_ context.Context, in *iot.DescribeThingInput, _ ...func(*iot.Options)) (*iot.DescribeThingOutput, error) {
	if err := f.call(in); err != nil {
		return nil, err
	}
	return &iot.DescribeThingOutput{ThingName: in.ThingName, ThingArn: aws.String("arn:thing/" + *in.ThingName),
		Attributes: map[string]string{"a": "1"}}, nil
}
func (f *fakeClient) CreateThing(_ context.Context, in *iot.CreateThingInput, _ ...func(*iot.Options)) (*iot.CreateThingOutput, error) {
	if err := f.call(in); err != nil {
		return nil, err
	}
	return &iot.CreateThingOutput{ThingName: in.ThingName, ThingArn: aws.String("arn:thing/" + *in.ThingName)}, nil
}
func (f *fakeClient) UpdateThing(_ context.Context, in *iot.UpdateThingInput, _ ...func(*iot.Options)) (*iot.UpdateThingOutput, error) {
	return &iot.UpdateThingOutput{}, f.call(in)
}
func (f *fakeClient) DeleteThing(_ context.Context, in *iot.DeleteThingInput, _ ...func(*iot.Options)) (*iot.DeleteThingOutput, error) {
	return &iot.DeleteThingOutput{}, f.call(in)
}
func (f *fakeClient) AttachThingPrincipal(_ context.Context, in *iot.AttachThingPrincipalInput, _ ...func(*iot.Options)) (*iot.AttachThingPrincipalOutput, error) {
	return &iot.AttachThingPrincipalOutput{}, f.call(in)
}
func (f *fakeClient) DetachThingPrincipal(_ context.Context, in *iot.DetachThingPrincipalInput, _ ...func(*iot.Options)) (*iot.DetachThingPrincipalOutput, error) {
	return &iot.DetachThingPrincipalOutput{}, f.call(in)
}
func (f *fakeClient) AttachPolicy(_ context.Context, in *iot.AttachPolicyInput, _ ...func(*iot.Options)) (*iot.AttachPolicyOutput, error) {
	return &iot.AttachPolicyOutput{}, f.call(in)
}
func (f *fakeClient) DetachPolicy(_ context.Context, in *iot.DetachPolicyInput, _ ...func(*iot.Options)) (*iot.DetachPolicyOutput, error) {
	return &iot.DetachPolicyOutput{}, f.call(in)
}

// pageIndex decodes the fake's page tokens ("" is page 0).
func pageIndex(token *string) int {
	var i int
	if token != nil {
		_, _ = fmt.Sscanf(*token, "page-%d", &i)
	}
	return i
}

func nextToken(i, n int) *string {
	if i+1 < n {
		return aws.String(fmt.Sprintf("page-%d", i+1))
	}
	return nil
}

func (f *fakeClient) ListThingPrincipals(_ context.Context, in *iot.ListThingPrincipalsInput, _ ...func(*iot.Options)) (*iot.ListThingPrincipalsOutput, error) {
	if err := f.call(in); err != nil {
		return nil, err
	}
	i := pageIndex(in.NextToken)
	if i >= len(f.principals) {
		return &iot.ListThingPrincipalsOutput{}, nil
	}
	return &iot.ListThingPrincipalsOutput{Principals: f.principals[i], NextToken: nextToken(i, len(f.principals))}, nil
}

func (f *fakeClient) ListAttachedPolicies(_ context.Context, in *iot.ListAttachedPoliciesInput, _ ...func(*iot.Options)) (*iot.ListAttachedPoliciesOutput, error) {
	if err := f.call(in); err != nil {
		return nil, err
	}
	i := pageIndex(in.Marker)
	if i >= len(f.policies) {
		return &iot.ListAttachedPoliciesOutput{}, nil
	}
	var pols []types.Policy
	for _, name := range f.policies[i] {
		pols = append(pols, types.Policy{PolicyName: aws.String(name)})
	}
	return &iot.ListAttachedPoliciesOutput{Policies: pols, NextMarker: nextToken(i, len(f.policies))}, nil
}

func (f *fakeClient) ListThings(_ context.Context, in *iot.ListThingsInput, _ ...func(*iot.Options)) (*iot.ListThingsOutput, error) {
	if err := f.call(in); err != nil {
		return nil, err
	}
	i := pageIndex(in.NextToken)
	if i >= len(f.things) {
		return &iot.ListThingsOutput{}, nil
	}
	var things []types.ThingAttribute
	for _, name := range f.things[i] {
		things = append(things, types.ThingAttribute{ThingName: aws.String(name), ThingArn: aws.String("arn:thing/" + name),
			Attributes: map[string]string{"name": name}})
	}
	return &iot.ListThingsOutput{Things: things, NextToken: nextToken(i, len(f.things))}, nil
}

func (f *fakeClient) ListCACertificates(_ context.Context, in *iot.ListCACertificatesInput, _ ...func(*iot.Options)) (*iot.ListCACertificatesOutput, error) {
	if err := f.call(in); err != nil {
		return nil, err
	}
	i := pageIndex(in.Marker)
	if i >= len(f.cas) {
		return &iot.ListCACertificatesOutput{}, nil
	}
	var cas []types.CACertificate
	for _, id := range f.cas[i] {
		cas = append(cas, types.CACertificate{CertificateId: aws.String(id), CertificateArn: aws.String("arn:cacert/" + id),
			Status: types.CACertificateStatusInactive, CreationDate: aws.Time(created)})
	}
	return &iot.ListCACertificatesOutput{Certificates: cas, NextMarker: nextToken(i, len(f.cas))}, nil
}

func (f *fakeClient) ListCertificatesByCA(_ context.Context, in *iot.ListCertificatesByCAInput, _ ...func(*iot.Options)) (*iot.ListCertificatesByCAOutput, error) {
	if err := f.call(in); err != nil {
		return nil, err
	}
	i := pageIndex(in.Marker)
	if i >= len(f.byCA) {
		return &iot.ListCertificatesByCAOutput{}, nil
	}
	var certs []types.Certificate
	for _, id := range f.byCA[i] {
		certs = append(certs, types.Certificate{CertificateId: aws.String(id), CertificateArn: aws.String("arn:cert/" + id),
			Status: types.CertificateStatusActive, CertificateMode: types.CertificateModeSniOnly, CreationDate: aws.Time(created)})
	}
	return &iot.ListCertificatesByCAOutput{Certificates: certs, NextMarker: nextToken(i, len(f.byCA))}, nil
}

var _ Client = (*fakeClient)(nil)

// sdkError wraps exc the way the SDK returns a service error.
func sdkError(op string, exc error) error {
	return &smithy.OperationError{ServiceID: "IoT", OperationName: op, Err: &smithyhttp.ResponseError{
		Response: &smithyhttp.Response{Response: &http.Response{StatusCode: 400}}, Err: exc,
	}}
}

// allOps calls every Registry operation once.
var allOps = map[string]func(context.Context, *Adapter) error{
	"RegisterCertificate": func(ctx context.Context, a *Adapter) error {
		_, err := a.RegisterCertificate(ctx, "PEM", fleet.CertActive)
		return err
	},
	"RegisterCACertificate": func(ctx context.Context, a *Adapter) error {
		_, err := a.RegisterCACertificate(ctx, "CAPEM")
		return err
	},
	"DescribeCertificate":   func(ctx context.Context, a *Adapter) error { _, err := a.DescribeCertificate(ctx, "c"); return err },
	"DescribeCACertificate": func(ctx context.Context, a *Adapter) error { _, err := a.DescribeCACertificate(ctx, "c"); return err },
	"UpdateCertificate":     func(ctx context.Context, a *Adapter) error { return a.UpdateCertificate(ctx, "c", fleet.CertRevoked) },
	"DeleteCertificate":     func(ctx context.Context, a *Adapter) error { return a.DeleteCertificate(ctx, "c") },
	"DescribeThing":         func(ctx context.Context, a *Adapter) error { _, err := a.DescribeThing(ctx, "t"); return err },
	"CreateThing":           func(ctx context.Context, a *Adapter) error { _, err := a.CreateThing(ctx, "t", nil); return err },
	"UpdateThing": func(ctx context.Context, a *Adapter) error {
		return a.UpdateThingAttributes(ctx, "t", map[string]string{"a": "1"})
	},
	"AttachThingPrincipal": func(ctx context.Context, a *Adapter) error { return a.AttachThingPrincipal(ctx, "t", "arn") },
	"DetachThingPrincipal": func(ctx context.Context, a *Adapter) error { return a.DetachThingPrincipal(ctx, "t", "arn") },
	"ListThingPrincipals":  func(ctx context.Context, a *Adapter) error { _, err := a.ListThingPrincipals(ctx, "t"); return err },
	"AttachPolicy":         func(ctx context.Context, a *Adapter) error { return a.AttachPolicy(ctx, "p", "arn") },
	"DetachPolicy":         func(ctx context.Context, a *Adapter) error { return a.DetachPolicy(ctx, "p", "arn") },
	"ListAttachedPolicies": func(ctx context.Context, a *Adapter) error { _, err := a.ListAttachedPolicies(ctx, "arn"); return err },
	"DeleteThing":          func(ctx context.Context, a *Adapter) error { return a.DeleteThing(ctx, "t") },
	"ListThings": func(ctx context.Context, a *Adapter) error {
		_, _, err := a.ListThings(ctx, "", "", 10, "")
		return err
	},
	"ListCACertificates": func(ctx context.Context, a *Adapter) error { _, err := a.ListCACertificates(ctx); return err },
	"ListCertificatesByCA": func(ctx context.Context, a *Adapter) error {
		_, _, err := a.ListCertificatesByCA(ctx, "ca", 10, "")
		return err
	},
}

func msg(s string) *string { return aws.String(s) }

// mappingOverrides are the operations that map an exception otherwise:
// UpdateCertificate answers CertificateStateException for a status change
// the certificate's state forbids (a REVOKED certificate), an invalid
// request as the port says, not a delete conflict.
var mappingOverrides = map[string]error{"CertificateState/UpdateCertificate": fleet.ErrInvalid}

func TestErrorMapping(t *testing.T) {
	tests := []struct {
		name string
		exc  error
		want error
	}{
		{"ResourceNotFound", &types.ResourceNotFoundException{Message: msg("no")}, fleet.ErrNotFound},
		{"ResourceAlreadyExists", &types.ResourceAlreadyExistsException{Message: msg("dup")}, fleet.ErrAlreadyExists},
		{"DeleteConflict", &types.DeleteConflictException{Message: msg("attached")}, fleet.ErrDeleteConflict},
		{"CertificateState", &types.CertificateStateException{Message: msg("active")}, fleet.ErrDeleteConflict},
		{"VersionConflict", &types.VersionConflictException{Message: msg("version")}, fleet.ErrConditionFailed},
		{"InvalidRequest", &types.InvalidRequestException{Message: msg("bad")}, fleet.ErrInvalid},
		{"CertificateValidation", &types.CertificateValidationException{Message: msg("bad cert")}, fleet.ErrInvalid},
		{"CertificateConflict", &types.CertificateConflictException{Message: msg("two CAs")}, fleet.ErrInvalid},
		{"MalformedPolicy", &types.MalformedPolicyException{Message: msg("policy")}, fleet.ErrInvalid},
		{"InvalidStateTransition", &types.InvalidStateTransitionException{Message: msg("state")}, fleet.ErrInvalid},
		{"Validation", &types.ValidationException{Message: msg("v")}, fleet.ErrInvalid},
		{"Unauthorized", &types.UnauthorizedException{Message: msg("denied")}, fleet.ErrInvalid},
		// HTTP 410: too many attached entities; retrying cannot help.
		{"LimitExceeded", &types.LimitExceededException{Message: msg("limit")}, fleet.ErrInvalid},
		// The SDK's retryer retries LimitExceededException as a throttling
		// code before giving up; it stays terminal.
		{"LimitExceeded after max attempts", &retry.MaxAttemptsError{Attempt: 5, Err: &types.LimitExceededException{Message: msg("limit")}}, fleet.ErrInvalid},
		{"LimitExceeded untyped", &smithy.GenericAPIError{Code: "LimitExceededException", Message: "limit"}, fleet.ErrInvalid},
		// Two pending updates conflict: AWS says to retry.
		{"ConflictingResourceUpdate", &types.ConflictingResourceUpdateException{Message: msg("pending")}, fleet.ErrBusy},
		{"Throttling", &types.ThrottlingException{Message: msg("rate")}, fleet.ErrThrottled},
		{"ServiceUnavailable", &types.ServiceUnavailableException{Message: msg("down")}, fleet.ErrUnavailable},
		{"InternalFailure", &types.InternalFailureException{Message: msg("oops")}, fleet.ErrUnavailable},
		{"Internal", &types.InternalException{Message: msg("oops")}, fleet.ErrUnavailable},
		{"InternalServer", &types.InternalServerException{Message: msg("oops")}, fleet.ErrUnavailable},
		{"throttling after max attempts", &retry.MaxAttemptsError{Attempt: 5, Err: &types.ThrottlingException{Message: msg("rate")}}, fleet.ErrThrottled},
		{"unknown server fault", &smithy.GenericAPIError{Code: "Weird", Fault: smithy.FaultServer}, fleet.ErrUnavailable},
		{"connection refused", &smithyhttp.RequestSendError{Err: errors.New("dial tcp: connection refused")}, fleet.ErrUnavailable},
		{"deadline", context.DeadlineExceeded, fleet.ErrUnavailable},
		{"code not in the operation's model", &smithy.GenericAPIError{Code: "ResourceNotFoundException", Message: "no"}, fleet.ErrNotFound},
		{"empty path member", &smithy.SerializationError{Err: errors.New("input member thingName must not be empty")}, fleet.ErrInvalid},
		{"missing parameter", &smithy.InvalidParamsError{Context: "Input"}, fleet.ErrInvalid},
	}
	for _, tt := range tests {
		for op, call := range allOps {
			t.Run(tt.name+"/"+op, func(t *testing.T) {
				sdkErr := sdkError(op, tt.exc)
				want := tt.want
				if w, ok := mappingOverrides[tt.name+"/"+op]; ok {
					want = w
				}
				err := call(context.Background(), New(&fakeClient{err: sdkErr}))
				if op == "DeleteThing" && want == fleet.ErrNotFound {
					if err != nil {
						t.Fatalf("DeleteThing of a missing thing = %v, want success", err)
					}
					return
				}
				if !errors.Is(err, want) {
					t.Fatalf("err = %v, want it to wrap %v", err, want)
				}
				if !errors.Is(err, sdkErr) {
					t.Errorf("err = %v does not keep the SDK error", err)
				}
				for _, other := range []error{fleet.ErrNotFound, fleet.ErrAlreadyExists, fleet.ErrDeleteConflict,
					fleet.ErrConditionFailed, fleet.ErrInvalid, fleet.ErrThrottled, fleet.ErrUnavailable, fleet.ErrBusy} {
					if other != want && errors.Is(err, other) {
						t.Errorf("err = %v also wraps %v", err, other)
					}
				}
			})
		}
	}
}

func TestUnmappedErrorIsTerminal(t *testing.T) {
	sdkErr := sdkError("DescribeThing", &smithy.GenericAPIError{Code: "SomethingNew", Fault: smithy.FaultClient})
	_, err := New(&fakeClient{err: sdkErr}).DescribeThing(context.Background(), "t")
	if err == nil || !errors.Is(err, sdkErr) {
		t.Fatalf("err = %v, want the SDK error", err)
	}
	if fleet.IsTransient(err) {
		t.Errorf("unmapped client error %v is transient", err)
	}
}

func TestDeleteThingStillAttachedIsDeleteConflict(t *testing.T) {
	tests := []struct {
		message string
		want    error
	}{
		{"Cannot delete. Thing t is still attached to one or more principals", fleet.ErrDeleteConflict},
		{"The request is not valid.", fleet.ErrInvalid},
	}
	for _, tt := range tests {
		f := &fakeClient{err: sdkError("DeleteThing", &types.InvalidRequestException{Message: msg(tt.message)})}
		err := New(f).DeleteThing(context.Background(), "t")
		if !errors.Is(err, tt.want) {
			t.Errorf("%q: err = %v, want %v", tt.message, err, tt.want)
		}
	}
}

func TestRequests(t *testing.T) {
	ctx := context.Background()
	f := &fakeClient{}
	a := New(f)

	cert, err := a.RegisterCertificate(ctx, "PEM", fleet.CertActive)
	if err != nil {
		t.Fatal(err)
	}
	if want := (fleet.Certificate{ID: "cid", ARN: "arn:cert/cid", PEM: "PEM", Status: fleet.CertActive}); cert != want {
		t.Errorf("RegisterCertificate = %+v, want %+v", cert, want)
	}
	reg := f.inputs[0].(*iot.RegisterCertificateInput)
	if reg.CaCertificatePem != nil || reg.Status != types.CertificateStatusActive || aws.ToString(reg.CertificatePem) != "PEM" {
		t.Errorf("RegisterCertificate input = %+v", reg)
	}

	desc, err := a.DescribeCertificate(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if want := (fleet.Certificate{ID: "c1", ARN: "arn:cert/c1", PEM: "PEM", CACertificateID: "caid", Status: fleet.CertRevoked, CreatedAt: created}); desc != want {
		t.Errorf("DescribeCertificate = %+v, want %+v", desc, want)
	}

	ca, err := a.DescribeCACertificate(ctx, "ca1")
	if err != nil {
		t.Fatal(err)
	}
	if want := (fleet.CACertificate{ID: "ca1", ARN: "arn:cacert/ca1", PEM: "CAPEM", Status: fleet.CertActive, AutoRegistration: true}); ca != want {
		t.Errorf("DescribeCACertificate = %+v, want %+v", ca, want)
	}

	if _, err := a.RegisterCACertificate(ctx, "CAPEM"); err != nil {
		t.Fatal(err)
	}
	rca := f.inputs[len(f.inputs)-1].(*iot.RegisterCACertificateInput)
	if rca.CertificateMode != types.CertificateModeSniOnly || !rca.SetAsActive || !rca.AllowAutoRegistration || rca.VerificationCertificate != nil {
		t.Errorf("RegisterCACertificate input = %+v", rca)
	}

	attrs := map[string]string{"origin": "eu-west-1"}
	thing, err := a.CreateThing(ctx, "t1", attrs)
	if err != nil {
		t.Fatal(err)
	}
	attrs["origin"] = "changed by caller"
	if thing.Name != "t1" || thing.ARN != "arn:thing/t1" || thing.Attributes["origin"] != "eu-west-1" {
		t.Errorf("CreateThing = %+v", thing)
	}
	ct := f.inputs[len(f.inputs)-1].(*iot.CreateThingInput)
	if ct.AttributePayload == nil || ct.AttributePayload.Attributes["origin"] != "eu-west-1" {
		t.Errorf("CreateThing input = %+v", ct)
	}

	if err := a.UpdateThingAttributes(ctx, "t1", map[string]string{"k": "v"}); err != nil {
		t.Fatal(err)
	}
	ut := f.inputs[len(f.inputs)-1].(*iot.UpdateThingInput)
	if !ut.AttributePayload.Merge || ut.AttributePayload.Attributes["k"] != "v" {
		t.Errorf("UpdateThing input = %+v, want a merge", ut.AttributePayload)
	}

	if err := a.DeleteCertificate(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if dc := f.inputs[len(f.inputs)-1].(*iot.DeleteCertificateInput); dc.ForceDelete {
		t.Error("DeleteCertificate forces the delete")
	}

	if err := a.AttachPolicy(ctx, "pol", "arn:cert/c1"); err != nil {
		t.Fatal(err)
	}
	if ap := f.inputs[len(f.inputs)-1].(*iot.AttachPolicyInput); aws.ToString(ap.PolicyName) != "pol" || aws.ToString(ap.Target) != "arn:cert/c1" {
		t.Errorf("AttachPolicy input = %+v", ap)
	}
}

func TestListsFollowEveryPage(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name  string
		pages [][]string
		want  []string
	}{
		{"none", nil, nil},
		{"one page", [][]string{{"a", "b"}}, []string{"a", "b"}},
		{"three pages", [][]string{{"a"}, {"b", "c"}, {"d"}}, []string{"a", "b", "c", "d"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeClient{principals: tt.pages, policies: tt.pages}
			got, err := New(f).ListThingPrincipals(ctx, "t")
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ListThingPrincipals = %v, want %v", got, tt.want)
			}
			got, err = New(f).ListAttachedPolicies(ctx, "arn")
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ListAttachedPolicies = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestListThingsRequests(t *testing.T) {
	ctx := context.Background()
	f := &fakeClient{things: [][]string{{"a", "b"}, {"c"}}}
	a := New(f)

	things, next, err := a.ListThings(ctx, "managedBy", "mriot", 2, "")
	if err != nil {
		t.Fatal(err)
	}
	in := f.inputs[len(f.inputs)-1].(*iot.ListThingsInput)
	if aws.ToInt32(in.MaxResults) != 2 || in.NextToken != nil ||
		aws.ToString(in.AttributeName) != "managedBy" || aws.ToString(in.AttributeValue) != "mriot" {
		t.Errorf("first ListThings input = %+v", in)
	}
	want := []fleet.Thing{
		{Name: "a", ARN: "arn:thing/a", Attributes: map[string]string{"name": "a"}},
		{Name: "b", ARN: "arn:thing/b", Attributes: map[string]string{"name": "b"}},
	}
	if !reflect.DeepEqual(things, want) || next != "page-1" {
		t.Errorf("first page = %+v, %q; want %+v, page-1", things, next, want)
	}

	things, next, err = a.ListThings(ctx, "", "", 250, next)
	if err != nil {
		t.Fatal(err)
	}
	in = f.inputs[len(f.inputs)-1].(*iot.ListThingsInput)
	if aws.ToString(in.NextToken) != "page-1" || in.AttributeName != nil || in.AttributeValue != nil {
		t.Errorf("second ListThings input = %+v, want the token and no filter", in)
	}
	if len(things) != 1 || things[0].Name != "c" || next != "" {
		t.Errorf("last page = %+v, %q; want [c] and no cursor", things, next)
	}
}

func TestListCertificatesByCARequests(t *testing.T) {
	ctx := context.Background()
	f := &fakeClient{byCA: [][]string{{"c1"}, {"c2"}}}
	a := New(f)
	certs, next, err := a.ListCertificatesByCA(ctx, "ca1", 1, "")
	if err != nil {
		t.Fatal(err)
	}
	in := f.inputs[len(f.inputs)-1].(*iot.ListCertificatesByCAInput)
	if aws.ToString(in.CaCertificateId) != "ca1" || aws.ToInt32(in.PageSize) != 1 || in.Marker != nil {
		t.Errorf("first ListCertificatesByCA input = %+v", in)
	}
	// The list names no CA and carries no PEM: the adapter fills the CA in.
	want := fleet.Certificate{ID: "c1", ARN: "arn:cert/c1", CACertificateID: "ca1", Status: fleet.CertActive, CreatedAt: created}
	if len(certs) != 1 || certs[0] != want || next != "page-1" {
		t.Errorf("first page = %+v, %q; want [%+v], page-1", certs, next, want)
	}
	certs, next, err = a.ListCertificatesByCA(ctx, "ca1", 1, next)
	if err != nil {
		t.Fatal(err)
	}
	if in := f.inputs[len(f.inputs)-1].(*iot.ListCertificatesByCAInput); aws.ToString(in.Marker) != "page-1" {
		t.Errorf("second ListCertificatesByCA input = %+v, want the marker", in)
	}
	if len(certs) != 1 || certs[0].ID != "c2" || next != "" {
		t.Errorf("last page = %+v, %q; want [c2] and no cursor", certs, next)
	}
}

func TestListCACertificatesFollowsEveryPage(t *testing.T) {
	f := &fakeClient{cas: [][]string{{"ca1", "ca2"}, {"ca3"}}}
	got, err := New(f).ListCACertificates(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []fleet.CACertificate{
		{ID: "ca1", ARN: "arn:cacert/ca1", Status: fleet.CertInactive},
		{ID: "ca2", ARN: "arn:cacert/ca2", Status: fleet.CertInactive},
		{ID: "ca3", ARN: "arn:cacert/ca3", Status: fleet.CertInactive},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ListCACertificates = %+v, want %+v", got, want)
	}
	if len(f.inputs) != 2 {
		t.Fatalf("%d calls, want 2 (one a page)", len(f.inputs))
	}
	for _, in := range f.inputs {
		if ps := aws.ToInt32(in.(*iot.ListCACertificatesInput).PageSize); ps != 250 {
			t.Errorf("page size %d, want 250 (fewest calls of its 10 TPS)", ps)
		}
	}
	if got, err := New(&fakeClient{}).ListCACertificates(context.Background()); err != nil || got == nil || len(got) != 0 {
		t.Errorf("no CA: %v, %v; want an empty list", got, err)
	}
}

// The adapter refuses what AWS would refuse before spending a call of a 10 TPS
// quota on it (and whatever an emulator would let through).
func TestListArgumentsRefusedWithoutACall(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		call func(a *Adapter) error
	}{
		{"ListThings limit 0", func(a *Adapter) error { _, _, err := a.ListThings(ctx, "", "", 0, ""); return err }},
		{"ListThings limit 251", func(a *Adapter) error { _, _, err := a.ListThings(ctx, "", "", 251, ""); return err }},
		{"ListThings name without value", func(a *Adapter) error { _, _, err := a.ListThings(ctx, "k", "", 10, ""); return err }},
		{"ListThings value without name", func(a *Adapter) error { _, _, err := a.ListThings(ctx, "", "v", 10, ""); return err }},
		{"ListCertificatesByCA limit -1", func(a *Adapter) error { _, _, err := a.ListCertificatesByCA(ctx, "ca", -1, ""); return err }},
		{"ListCertificatesByCA limit 251", func(a *Adapter) error { _, _, err := a.ListCertificatesByCA(ctx, "ca", 251, ""); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeClient{}
			if err := tt.call(New(f)); !errors.Is(err, fleet.ErrInvalid) {
				t.Errorf("err = %v, want ErrInvalid", err)
			}
			if len(f.inputs) != 0 {
				t.Errorf("%d calls made, want none", len(f.inputs))
			}
		})
	}
}
