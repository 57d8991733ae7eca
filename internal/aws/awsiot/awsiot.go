// Package awsiot is the contract.Registry adapter over one region's AWS IoT
// registry (aws-sdk-go-v2/service/iot). AWS errors are mapped onto the fleet
// sentinels; the original error stays in the chain.
package awsiot

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/aws-sdk-go-v2/service/iot/types"

	"github.com/mriot/mriot/internal/core/contract"
	"github.com/mriot/mriot/internal/core/fleet"
)

// Client is the part of the IoT SDK client the adapter uses; *iot.Client
// satisfies it.
type Client interface {
	RegisterCertificate(ctx context.Context, in *iot.RegisterCertificateInput, optFns ...func(*iot.Options)) (*iot.RegisterCertificateOutput, error)
	RegisterCACertificate(ctx context.Context, in *iot.RegisterCACertificateInput, optFns ...func(*iot.Options)) (*iot.RegisterCACertificateOutput, error)
	DescribeCertificate(ctx context.Context, in *iot.DescribeCertificateInput, optFns ...func(*iot.Options)) (*iot.DescribeCertificateOutput, error)
	DescribeCACertificate(ctx context.Context, in *iot.DescribeCACertificateInput, optFns ...func(*iot.Options)) (*iot.DescribeCACertificateOutput, error)
	UpdateCertificate(ctx context.Context, in *iot.UpdateCertificateInput, optFns ...func(*iot.Options)) (*iot.UpdateCertificateOutput, error)
	DeleteCertificate(ctx context.Context, in *iot.DeleteCertificateInput, optFns ...func(*iot.Options)) (*iot.DeleteCertificateOutput, error)
	DescribeThing(ctx context.Context, in *iot.DescribeThingInput, optFns ...func(*iot.Options)) (*iot.DescribeThingOutput, error)
	CreateThing(ctx context.Context, in *iot.CreateThingInput, optFns ...func(*iot.Options)) (*iot.CreateThingOutput, error)
	UpdateThing(ctx context.Context, in *iot.UpdateThingInput, optFns ...func(*iot.Options)) (*iot.UpdateThingOutput, error)
	DeleteThing(ctx context.Context, in *iot.DeleteThingInput, optFns ...func(*iot.Options)) (*iot.DeleteThingOutput, error)
	AttachThingPrincipal(ctx context.Context, in *iot.AttachThingPrincipalInput, optFns ...func(*iot.Options)) (*iot.AttachThingPrincipalOutput, error)
	DetachThingPrincipal(ctx context.Context, in *iot.DetachThingPrincipalInput, optFns ...func(*iot.Options)) (*iot.DetachThingPrincipalOutput, error)
	AttachPolicy(ctx context.Context, in *iot.AttachPolicyInput, optFns ...func(*iot.Options)) (*iot.AttachPolicyOutput, error)
	DetachPolicy(ctx context.Context, in *iot.DetachPolicyInput, optFns ...func(*iot.Options)) (*iot.DetachPolicyOutput, error)
	iot.ListThingPrincipalsAPIClient
	iot.ListAttachedPoliciesAPIClient
	iot.ListThingsAPIClient
	iot.ListCACertificatesAPIClient
	iot.ListCertificatesByCAAPIClient
}

var _ Client = (*iot.Client)(nil)

// Adapter is one region's IoT registry.
type Adapter struct {
	client Client
}

// New returns the adapter over client (an *iot.Client, or a fake in tests).
func New(client Client) *Adapter { return &Adapter{client: client} }

// RegisterCertificate registers a device certificate signed by a CA that is
// registered in this region; the CA's PEM is not sent. AWS answers with the
// id and the ARN only, so CreatedAt stays zero (DescribeCertificate has it).
func (a *Adapter) RegisterCertificate(ctx context.Context, pem string, status fleet.CertStatus) (fleet.Certificate, error) {
	out, err := a.client.RegisterCertificate(ctx, &iot.RegisterCertificateInput{
		CertificatePem: aws.String(pem),
		Status:         types.CertificateStatus(status),
	})
	if err != nil {
		return fleet.Certificate{}, wrap(err, "register certificate")
	}
	return fleet.Certificate{
		ID:     aws.ToString(out.CertificateId),
		ARN:    aws.ToString(out.CertificateArn),
		PEM:    pem,
		Status: status,
	}, nil
}

// DescribeCertificate returns the certificate with this id.
func (a *Adapter) DescribeCertificate(ctx context.Context, id string) (fleet.Certificate, error) {
	out, err := a.client.DescribeCertificate(ctx, &iot.DescribeCertificateInput{CertificateId: aws.String(id)})
	if err != nil {
		return fleet.Certificate{}, wrap(err, "describe certificate %s", id)
	}
	d := out.CertificateDescription
	if d == nil {
		return fleet.Certificate{}, fmt.Errorf("describe certificate %s: empty description: %w", id, fleet.ErrUnavailable)
	}
	return fleet.Certificate{
		ID:              aws.ToString(d.CertificateId),
		ARN:             aws.ToString(d.CertificateArn),
		PEM:             aws.ToString(d.CertificatePem),
		CACertificateID: aws.ToString(d.CaCertificateId),
		Status:          fleet.CertStatus(d.Status),
		CreatedAt:       aws.ToTime(d.CreationDate),
	}, nil
}

// DescribeCACertificate returns the CA certificate with this id.
func (a *Adapter) DescribeCACertificate(ctx context.Context, id string) (fleet.CACertificate, error) {
	out, err := a.client.DescribeCACertificate(ctx, &iot.DescribeCACertificateInput{CertificateId: aws.String(id)})
	if err != nil {
		return fleet.CACertificate{}, wrap(err, "describe CA certificate %s", id)
	}
	d := out.CertificateDescription
	if d == nil {
		return fleet.CACertificate{}, fmt.Errorf("describe CA certificate %s: empty description: %w", id, fleet.ErrUnavailable)
	}
	return fleet.CACertificate{
		ID:               aws.ToString(d.CertificateId),
		ARN:              aws.ToString(d.CertificateArn),
		PEM:              aws.ToString(d.CertificatePem),
		Status:           fleet.CertStatus(d.Status),
		AutoRegistration: d.AutoRegistrationStatus == types.AutoRegistrationStatusEnable,
	}, nil
}

// RegisterCACertificate registers caPEM as an ACTIVE CA certificate in
// SNI_ONLY mode (no verification certificate) with auto-registration allowed,
// as the deployment does in every region. It is not part of the workflows'
// port; the deployment's custom resource and the local stack use it.
func (a *Adapter) RegisterCACertificate(ctx context.Context, caPEM string) (fleet.CACertificate, error) {
	out, err := a.client.RegisterCACertificate(ctx, &iot.RegisterCACertificateInput{
		CaCertificate:         aws.String(caPEM),
		CertificateMode:       types.CertificateModeSniOnly,
		SetAsActive:           true,
		AllowAutoRegistration: true,
	})
	if err != nil {
		return fleet.CACertificate{}, wrap(err, "register CA certificate")
	}
	return fleet.CACertificate{
		ID:               aws.ToString(out.CertificateId),
		ARN:              aws.ToString(out.CertificateArn),
		PEM:              caPEM,
		Status:           fleet.CertActive,
		AutoRegistration: true,
	}, nil
}

// UpdateCertificate sets the certificate's status.
func (a *Adapter) UpdateCertificate(ctx context.Context, id string, status fleet.CertStatus) error {
	_, err := a.client.UpdateCertificate(ctx, &iot.UpdateCertificateInput{
		CertificateId: aws.String(id),
		NewStatus:     types.CertificateStatus(status),
	})
	// Here CertificateStateException is a status change the certificate's
	// state forbids (a REVOKED certificate cannot change): an invalid
	// request, as the port documents, not a delete conflict.
	var cse *types.CertificateStateException
	if errors.As(err, &cse) {
		return fmt.Errorf("update certificate %s to %s: %w: %w", id, status, fleet.ErrInvalid, err)
	}
	return wrap(err, "update certificate %s to %s", id, status)
}

// DeleteCertificate deletes the certificate (never forced: an ACTIVE or
// attached certificate fails with ErrDeleteConflict).
func (a *Adapter) DeleteCertificate(ctx context.Context, id string) error {
	_, err := a.client.DeleteCertificate(ctx, &iot.DeleteCertificateInput{CertificateId: aws.String(id)})
	return wrap(err, "delete certificate %s", id)
}

// DescribeThing returns the thing.
func (a *Adapter) DescribeThing(ctx context.Context, name string) (fleet.Thing, error) {
	out, err := a.client.DescribeThing(ctx, &iot.DescribeThingInput{ThingName: aws.String(name)})
	if err != nil {
		return fleet.Thing{}, wrap(err, "describe thing %s", name)
	}
	return fleet.Thing{
		Name:       aws.ToString(out.ThingName),
		ARN:        aws.ToString(out.ThingArn),
		Attributes: maps.Clone(out.Attributes),
	}, nil
}

// CreateThing creates the thing with attrs. AWS makes a repeated identical
// call a success and a call with other attributes ResourceAlreadyExists.
func (a *Adapter) CreateThing(ctx context.Context, name string, attrs map[string]string) (fleet.Thing, error) {
	in := &iot.CreateThingInput{ThingName: aws.String(name)}
	if len(attrs) > 0 {
		in.AttributePayload = &types.AttributePayload{Attributes: maps.Clone(attrs)}
	}
	out, err := a.client.CreateThing(ctx, in)
	if err != nil {
		return fleet.Thing{}, wrap(err, "create thing %s", name)
	}
	return fleet.Thing{
		Name:       aws.ToString(out.ThingName),
		ARN:        aws.ToString(out.ThingArn),
		Attributes: maps.Clone(attrs),
	}, nil
}

// UpdateThingAttributes merges attrs into the thing's attributes.
func (a *Adapter) UpdateThingAttributes(ctx context.Context, name string, attrs map[string]string) error {
	_, err := a.client.UpdateThing(ctx, &iot.UpdateThingInput{
		ThingName:        aws.String(name),
		AttributePayload: &types.AttributePayload{Attributes: maps.Clone(attrs), Merge: true},
	})
	return wrap(err, "update thing %s attributes", name)
}

// DeleteThing deletes the thing. A missing thing is a success (AWS's
// behaviour, enforced here whatever the endpoint answers); a thing that still
// has principals fails with ErrDeleteConflict.
func (a *Adapter) DeleteThing(ctx context.Context, name string) error {
	_, err := a.client.DeleteThing(ctx, &iot.DeleteThingInput{ThingName: aws.String(name)})
	if err == nil {
		return nil
	}
	if Sentinel(err) == fleet.ErrNotFound {
		return nil
	}
	// AWS refuses to delete a thing with attached principals with an
	// InvalidRequestException ("Cannot delete. Thing X is still attached to
	// one or more principals"); the message is the only way to tell it from
	// a malformed request.
	var invalid *types.InvalidRequestException
	if errors.As(err, &invalid) && strings.Contains(strings.ToLower(invalid.ErrorMessage()), "still attached") {
		return fmt.Errorf("delete thing %s: %w: %w", name, fleet.ErrDeleteConflict, err)
	}
	return wrap(err, "delete thing %s", name)
}

// AttachThingPrincipal attaches the certificate (by ARN) to the thing.
func (a *Adapter) AttachThingPrincipal(ctx context.Context, thing, principalARN string) error {
	_, err := a.client.AttachThingPrincipal(ctx, &iot.AttachThingPrincipalInput{
		ThingName: aws.String(thing), Principal: aws.String(principalARN),
	})
	return wrap(err, "attach principal %s to thing %s", principalARN, thing)
}

// DetachThingPrincipal detaches the certificate (by ARN) from the thing.
func (a *Adapter) DetachThingPrincipal(ctx context.Context, thing, principalARN string) error {
	_, err := a.client.DetachThingPrincipal(ctx, &iot.DetachThingPrincipalInput{
		ThingName: aws.String(thing), Principal: aws.String(principalARN),
	})
	return wrap(err, "detach principal %s from thing %s", principalARN, thing)
}

// ListThingPrincipals lists the principal ARNs attached to the thing, all
// pages.
func (a *Adapter) ListThingPrincipals(ctx context.Context, thing string) ([]string, error) {
	p := iot.NewListThingPrincipalsPaginator(a.client, &iot.ListThingPrincipalsInput{ThingName: aws.String(thing)})
	var out []string
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, wrap(err, "list principals of thing %s", thing)
		}
		out = append(out, page.Principals...)
	}
	return out, nil
}

// AttachPolicy attaches the policy to the principal (by ARN).
func (a *Adapter) AttachPolicy(ctx context.Context, policy, principalARN string) error {
	_, err := a.client.AttachPolicy(ctx, &iot.AttachPolicyInput{
		PolicyName: aws.String(policy), Target: aws.String(principalARN),
	})
	return wrap(err, "attach policy %s to %s", policy, principalARN)
}

// DetachPolicy detaches the policy from the principal (by ARN).
func (a *Adapter) DetachPolicy(ctx context.Context, policy, principalARN string) error {
	_, err := a.client.DetachPolicy(ctx, &iot.DetachPolicyInput{
		PolicyName: aws.String(policy), Target: aws.String(principalARN),
	})
	return wrap(err, "detach policy %s from %s", policy, principalARN)
}

// ListAttachedPolicies lists the names of the policies attached to the
// principal (by ARN), all pages.
func (a *Adapter) ListAttachedPolicies(ctx context.Context, principalARN string) ([]string, error) {
	p := iot.NewListAttachedPoliciesPaginator(a.client, &iot.ListAttachedPoliciesInput{Target: aws.String(principalARN)})
	var out []string
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, wrap(err, "list policies of %s", principalARN)
		}
		for _, pol := range page.Policies {
			out = append(out, aws.ToString(pol.PolicyName))
		}
	}
	return out, nil
}

// checkLimit refuses a page size outside 1 to 250 before any request: AWS
// would refuse it (InvalidRequestException), but not every endpoint does.
func checkLimit(what string, limit int) error {
	if limit < 1 || limit > contract.MaxListLimit {
		return fmt.Errorf("%s: limit %d is not within 1 to %d: %w", what, limit, contract.MaxListLimit, fleet.ErrInvalid)
	}
	return nil
}

// ListThings lists one page of things (AWS ListThings), filtered on an
// attribute's exact value when attrName and attrValue are given.
func (a *Adapter) ListThings(ctx context.Context, attrName, attrValue string, limit int, cursor string) ([]fleet.Thing, string, error) {
	if err := checkLimit("list things", limit); err != nil {
		return nil, "", err
	}
	if (attrName == "") != (attrValue == "") {
		return nil, "", fmt.Errorf("list things: attribute name %q and value %q: give both or neither: %w", attrName, attrValue, fleet.ErrInvalid)
	}
	in := &iot.ListThingsInput{MaxResults: aws.Int32(int32(limit))}
	if cursor != "" {
		in.NextToken = aws.String(cursor)
	}
	if attrName != "" {
		in.AttributeName, in.AttributeValue = aws.String(attrName), aws.String(attrValue)
	}
	out, err := a.client.ListThings(ctx, in)
	if err != nil {
		return nil, "", wrap(err, "list things")
	}
	things := make([]fleet.Thing, 0, len(out.Things))
	for _, th := range out.Things {
		things = append(things, fleet.Thing{
			Name:       aws.ToString(th.ThingName),
			ARN:        aws.ToString(th.ThingArn),
			Attributes: maps.Clone(th.Attributes),
		})
	}
	return things, aws.ToString(out.NextToken), nil
}

// caPageSize is the page size of ListCACertificates: the largest, so that
// listing every CA takes as few calls of its 10 TPS as possible.
const caPageSize = contract.MaxListLimit

// ListCACertificates lists every CA certificate of the region, all pages.
func (a *Adapter) ListCACertificates(ctx context.Context) ([]fleet.CACertificate, error) {
	p := iot.NewListCACertificatesPaginator(a.client, &iot.ListCACertificatesInput{PageSize: aws.Int32(caPageSize)})
	out := []fleet.CACertificate{}
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, wrap(err, "list CA certificates")
		}
		for _, c := range page.Certificates {
			out = append(out, fleet.CACertificate{
				ID:     aws.ToString(c.CertificateId),
				ARN:    aws.ToString(c.CertificateArn),
				Status: fleet.CertStatus(c.Status),
			})
		}
	}
	return out, nil
}

// ListCertificatesByCA lists one page of the device certificates registered
// with the CA caID (AWS ListCertificatesByCA). The list names no CA, so every
// certificate carries caID.
func (a *Adapter) ListCertificatesByCA(ctx context.Context, caID string, limit int, cursor string) ([]fleet.Certificate, string, error) {
	if err := checkLimit("list certificates of CA "+caID, limit); err != nil {
		return nil, "", err
	}
	in := &iot.ListCertificatesByCAInput{CaCertificateId: aws.String(caID), PageSize: aws.Int32(int32(limit))}
	if cursor != "" {
		in.Marker = aws.String(cursor)
	}
	out, err := a.client.ListCertificatesByCA(ctx, in)
	if err != nil {
		return nil, "", wrap(err, "list certificates of CA %s", caID)
	}
	certs := make([]fleet.Certificate, 0, len(out.Certificates))
	for _, c := range out.Certificates {
		certs = append(certs, fleet.Certificate{
			ID:              aws.ToString(c.CertificateId),
			ARN:             aws.ToString(c.CertificateArn),
			CACertificateID: caID,
			Status:          fleet.CertStatus(c.Status),
			CreatedAt:       aws.ToTime(c.CreationDate),
		})
	}
	return certs, aws.ToString(out.NextMarker), nil
}
