package jitr

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/mriot/mriot/internal/fleet"
	"github.com/mriot/mriot/internal/saga"
)

// Registrar is the part of one region's IoT registry that the shared
// convergence steps use. It is a subset of contract.Registry; the replicate
// workflow passes its own, larger registry port.
type Registrar interface {
	DescribeCertificate(ctx context.Context, id string) (fleet.Certificate, error)
	UpdateCertificate(ctx context.Context, id string, status fleet.CertStatus) error
	DescribeThing(ctx context.Context, name string) (fleet.Thing, error)
	CreateThing(ctx context.Context, name string, attrs map[string]string) (fleet.Thing, error)
	DeleteThing(ctx context.Context, name string) error
	AttachThingPrincipal(ctx context.Context, thing, principalARN string) error
	DetachThingPrincipal(ctx context.Context, thing, principalARN string) error
	ListThingPrincipals(ctx context.Context, thing string) ([]string, error)
	AttachPolicy(ctx context.Context, policy, principalARN string) error
	DetachPolicy(ctx context.Context, policy, principalARN string) error
	ListAttachedPolicies(ctx context.Context, principalARN string) ([]string, error)
}

// Step names of the convergence steps, shared by jitr and replicate.
const (
	StepCreateThing     = "create-thing"
	StepAttachPrincipal = "attach-principal"
	StepAttachPolicy    = "attach-policy"
	StepActivate        = "activate-certificate"
)

// CreatedByAttribute is the thing attribute that names the saga that created
// a thing.
const CreatedByAttribute = "createdBy"

// ThingSteps returns the steps that make thing exist with the certificate
// certARN attached to it and policy attached to the certificate, in one
// region. Each step first reads whether its resource is in place already and
// then reports unchanged, so that its compensation never touches a resource
// that existed before the run.
//
// sagaID names the run. The thing is created with it as its createdBy
// attribute: AWS's CreateThing succeeds on a repeat call with the same
// attributes and fails with ResourceAlreadyExists when they differ, so when
// two runs (jitr here and replicate, say) race to create the same thing, only
// the one whose call created it reports a change and may undo it. A
// redelivery of the same saga finds its own thing and may undo it too.
func ThingSteps(reg Registrar, thing, certARN, policy, sagaID string) []saga.Step {
	return []saga.Step{
		{
			Name: StepCreateThing,
			Do: func(ctx context.Context) (bool, error) {
				th, err := reg.DescribeThing(ctx, thing)
				switch {
				case err == nil:
					// Ours only if an earlier delivery of this saga made it.
					return th.Attributes[CreatedByAttribute] == sagaID, nil
				case !errors.Is(err, fleet.ErrNotFound):
					return false, fmt.Errorf("describe thing %s: %w", thing, err)
				}
				if _, err := reg.CreateThing(ctx, thing, map[string]string{CreatedByAttribute: sagaID}); err != nil {
					if errors.Is(err, fleet.ErrAlreadyExists) {
						// Created meanwhile by another run: not ours to undo.
						return false, nil
					}
					return false, fmt.Errorf("create thing %s: %w", thing, err)
				}
				return true, nil
			},
			Undo: func(ctx context.Context) error {
				if err := reg.DeleteThing(ctx, thing); err != nil {
					return fmt.Errorf("delete thing %s: %w", thing, err)
				}
				return nil
			},
		},
		{
			Name: StepAttachPrincipal,
			Do: func(ctx context.Context) (bool, error) {
				prs, err := reg.ListThingPrincipals(ctx, thing)
				if err != nil {
					return false, fmt.Errorf("list principals of thing %s: %w", thing, err)
				}
				if slices.Contains(prs, certARN) {
					return false, nil
				}
				if err := reg.AttachThingPrincipal(ctx, thing, certARN); err != nil {
					return false, fmt.Errorf("attach %s to thing %s: %w", certARN, thing, err)
				}
				return true, nil
			},
			Undo: func(ctx context.Context) error {
				if err := reg.DetachThingPrincipal(ctx, thing, certARN); err != nil {
					return fmt.Errorf("detach %s from thing %s: %w", certARN, thing, err)
				}
				return nil
			},
		},
		{
			Name: StepAttachPolicy,
			Do: func(ctx context.Context) (bool, error) {
				pols, err := reg.ListAttachedPolicies(ctx, certARN)
				if err != nil {
					return false, fmt.Errorf("list policies of %s: %w", certARN, err)
				}
				if slices.Contains(pols, policy) {
					return false, nil
				}
				if err := reg.AttachPolicy(ctx, policy, certARN); err != nil {
					return false, fmt.Errorf("attach policy %s to %s: %w", policy, certARN, err)
				}
				return true, nil
			},
			Undo: func(ctx context.Context) error {
				if err := reg.DetachPolicy(ctx, policy, certARN); err != nil {
					return fmt.Errorf("detach policy %s from %s: %w", policy, certARN, err)
				}
				return nil
			},
		},
	}
}

// ActivateStep returns the step that makes the certificate ACTIVE. A REVOKED
// certificate cannot be activated: that is a terminal failure.
//
// The step has no compensation on purpose: every saga puts it last, so no
// later step can fail and ask for it to be undone. That matters because the
// honest undo does not exist: AWS cannot set a certificate back to
// PENDING_ACTIVATION, and only a PENDING_ACTIVATION certificate makes IoT
// Core publish the registered event again. Keeping activation last means a
// rolled-back JITR leaves the certificate PENDING_ACTIVATION: the device is
// refused and its next connection re-fires JITR.
func ActivateStep(reg Registrar, certID string) saga.Step {
	return saga.Step{
		Name: StepActivate,
		Do: func(ctx context.Context) (bool, error) {
			c, err := reg.DescribeCertificate(ctx, certID)
			if err != nil {
				return false, fmt.Errorf("describe certificate %s: %w", certID, err)
			}
			switch c.Status {
			case fleet.CertActive:
				return false, nil
			case fleet.CertRevoked:
				return false, fmt.Errorf("activate certificate %s: it is REVOKED: %w", certID, fleet.ErrInvalid)
			}
			if err := reg.UpdateCertificate(ctx, certID, fleet.CertActive); err != nil {
				return false, fmt.Errorf("activate certificate %s: %w", certID, err)
			}
			return true, nil
		},
	}
}
