package awsiot

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/aws-sdk-go-v2/service/iot/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/mriot/mriot/internal/fleet"
)

// fakeClient answers every call with err when set; otherwise with canned
// outputs. It records the inputs it was given.
type fakeClient struct {
	err        error
	inputs     []any
	principals [][]string // pages of ListThingPrincipals
	policies   [][]string // pages of ListAttachedPolicies
}

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
}

func msg(s string) *string { return aws.String(s) }

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
		{"Throttling", &types.ThrottlingException{Message: msg("rate")}, fleet.ErrThrottled},
		{"LimitExceeded", &types.LimitExceededException{Message: msg("limit")}, fleet.ErrThrottled},
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
				err := call(context.Background(), New(&fakeClient{err: sdkErr}))
				if op == "DeleteThing" && tt.want == fleet.ErrNotFound {
					if err != nil {
						t.Fatalf("DeleteThing of a missing thing = %v, want success", err)
					}
					return
				}
				if !errors.Is(err, tt.want) {
					t.Fatalf("err = %v, want it to wrap %v", err, tt.want)
				}
				if !errors.Is(err, sdkErr) {
					t.Errorf("err = %v does not keep the SDK error", err)
				}
				for _, other := range []error{fleet.ErrNotFound, fleet.ErrAlreadyExists, fleet.ErrDeleteConflict,
					fleet.ErrConditionFailed, fleet.ErrInvalid, fleet.ErrThrottled, fleet.ErrUnavailable} {
					if other != tt.want && errors.Is(err, other) {
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
	if want := (fleet.Certificate{ID: "c1", ARN: "arn:cert/c1", PEM: "PEM", CACertificateID: "caid", Status: fleet.CertRevoked}); desc != want {
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
