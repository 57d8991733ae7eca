// Package replicate converges one region's IoT registry to the device
// inventory. It is the Lambda invoked through EventBridge (DynamoDB stream →
// Pipe → custom bus → rule) with one inventory stream record as the event's
// detail. Each replica's stream carries local and replicated writes.
//
// The record is a trigger, not the truth: the handler reads the current item
// from this region's replica and converges the registry to it, so duplicate,
// retried and out-of-order deliveries are harmless, and nothing is read from
// the origin region (the certificate PEM travels with the item).
package replicate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/mriot/mriot/internal/ddbitem"
	"github.com/mriot/mriot/internal/fleet"
	"github.com/mriot/mriot/internal/jitr"
	"github.com/mriot/mriot/internal/obs"
	"github.com/mriot/mriot/internal/saga"
)

// Registry is what replicate needs of its region's IoT registry.
type Registry interface {
	jitr.Registrar
	RegisterCertificate(ctx context.Context, pem string, status fleet.CertStatus) (fleet.Certificate, error)
	DeleteCertificate(ctx context.Context, id string) error
	UpdateThingAttributes(ctx context.Context, name string, attrs map[string]string) error
}

// Inventory is what replicate needs of its region's inventory replica.
type Inventory interface {
	Get(ctx context.Context, thingName string) (fleet.Device, error)
}

// Function is the function name in logs and metric dimensions.
const Function = "replicate"

// VersionAttribute is the thing attribute that records the inventory version
// this region's registry was last converged to.
const VersionAttribute = "inventoryVersion"

// RemovingAttribute is the thing attribute that names, during a removal, the
// certificates being removed (ids joined by '.').
const RemovingAttribute = "removing"

// Step names beyond the shared jitr steps.
const (
	StepRegister       = "register-certificate"
	StepRecordVersion  = "record-version"
	StepMark           = "mark-removal"
	StepRevoke         = "revoke-certificate"
	StepDetachPolicies = "detach-policies"
	StepDetachThing    = "detach-principal"
	StepDeleteThing    = "delete-thing"
	StepDeactivate     = "deactivate-certificate"
	StepDeleteCert     = "delete-certificate"
)

// ReasonBadEvent is the rejection reason of an event that cannot be decoded.
const ReasonBadEvent = "bad_event"

// Config holds a Handler's dependencies.
type Config struct {
	Registry   Registry
	Inventory  Inventory
	Region     string
	PolicyName string
	Now        func() time.Time // time.Now when nil
	Log        *slog.Logger     // discarded when nil
	Metrics    obs.Metrics      // dropped when nil
	Tracer     obs.Tracer       // none when nil
	// Runner carries the saga settings; Log, Metrics, Tracer and Now are
	// filled from the fields above when unset.
	Runner saga.Runner
}

// Handler handles inventory stream records.
type Handler struct {
	reg     Registry
	inv     Inventory
	region  string
	policy  string
	log     *slog.Logger
	metrics obs.Metrics
	runner  saga.Runner
	// mutate, set only by tests, rewrites a saga's steps before a run.
	mutate func([]saga.Step) []saga.Step
}

// New checks cfg and returns a Handler.
func New(cfg Config) (*Handler, error) {
	switch {
	case cfg.Registry == nil:
		return nil, errors.New("replicate: no registry")
	case cfg.Inventory == nil:
		return nil, errors.New("replicate: no inventory")
	case cfg.Region == "":
		return nil, errors.New("replicate: no region")
	}
	if err := fleet.ValidateThingName(cfg.PolicyName); err != nil {
		return nil, fmt.Errorf("replicate: device policy name: %w", err)
	}
	h := &Handler{reg: cfg.Registry, inv: cfg.Inventory, region: cfg.Region, policy: cfg.PolicyName,
		log: cfg.Log, metrics: cfg.Metrics, runner: cfg.Runner}
	if h.log == nil {
		h.log = obs.Discard()
	}
	if h.metrics == nil {
		h.metrics = obs.Nop{}
	}
	h.runner = h.runner.Fill(h.log, h.metrics, cfg.Tracer, cfg.Now)
	return h, nil
}

// Trigger is what the handler takes from a stream record: which thing to
// converge, and the certificate the record's old image names (for a
// removal, whose current item is gone).
type Trigger struct {
	ThingName string
	EventName string // INSERT, MODIFY, REMOVE
	// OldCertificateID is the certificate of the old image, "" without one.
	OldCertificateID string
}

// ParseEvent decodes an EventBridge event whose detail is one DynamoDB stream
// record of the inventory. The error wraps fleet.ErrInvalid.
func ParseEvent(payload []byte) (Trigger, error) {
	var ev events.EventBridgeEvent
	if err := json.Unmarshal(payload, &ev); err != nil {
		return Trigger{}, fmt.Errorf("decode EventBridge event: %w: %w", fleet.ErrInvalid, err)
	}
	if len(ev.Detail) == 0 || string(ev.Detail) == "null" {
		return Trigger{}, fmt.Errorf("EventBridge event %q has no detail: %w", ev.ID, fleet.ErrInvalid)
	}
	var rec events.DynamoDBEventRecord
	if err := json.Unmarshal(ev.Detail, &rec); err != nil {
		return Trigger{}, fmt.Errorf("decode stream record of event %q: %w: %w", ev.ID, fleet.ErrInvalid, err)
	}
	return TriggerFromRecord(rec)
}

// TriggerFromRecord reads the thing name (and the old image's certificate)
// of an inventory stream record. The error wraps fleet.ErrInvalid.
func TriggerFromRecord(rec events.DynamoDBEventRecord) (Trigger, error) {
	key, ok := rec.Change.Keys[ddbitem.AttrThingName]
	if !ok || key.DataType() != events.DataTypeString {
		return Trigger{}, fmt.Errorf("stream record %q: no string key %s: %w", rec.EventID, ddbitem.AttrThingName, fleet.ErrInvalid)
	}
	t := Trigger{ThingName: key.String(), EventName: rec.EventName}
	if err := fleet.ValidateThingName(t.ThingName); err != nil {
		return Trigger{}, fmt.Errorf("stream record %q: key: %w", rec.EventID, err)
	}
	switch t.EventName {
	case "INSERT", "MODIFY", "REMOVE":
	default:
		return Trigger{}, fmt.Errorf("stream record %q: event name %q: %w", rec.EventID, rec.EventName, fleet.ErrInvalid)
	}
	if old, ok := rec.Change.OldImage[ddbitem.AttrCertificateID]; ok && old.DataType() == events.DataTypeString {
		t.OldCertificateID = old.String()
		if !isCertID(t.OldCertificateID) {
			return Trigger{}, fmt.Errorf("stream record %q: old certificate id %q: %w", rec.EventID, t.OldCertificateID, fleet.ErrInvalid)
		}
	}
	return t, nil
}

func isCertID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Invoke is the Lambda entry point (lambda.Handler). An event that cannot be
// decoded is logged, counted and dropped.
func (h *Handler) Invoke(ctx context.Context, payload []byte) ([]byte, error) {
	t, err := ParseEvent(payload)
	if err != nil {
		h.reject(ctx, ReasonBadEvent, err)
		return nil, nil
	}
	return nil, h.Handle(ctx, t)
}

// Handle converges this region's registry to the current inventory item of
// t.ThingName. It returns an error when Lambda should deliver the event
// again, or when a terminal failure was rolled back.
func (h *Handler) Handle(ctx context.Context, t Trigger) error {
	log := h.log.With(slog.String("thingName", t.ThingName), slog.String("eventName", t.EventName), slog.String("region", h.region))
	dev, err := h.inv.Get(ctx, t.ThingName)
	switch {
	case errors.Is(err, fleet.ErrNotFound):
		return h.remove(ctx, log, t.ThingName, t.OldCertificateID, "removed")
	case err != nil:
		return h.fail(ctx, log, fmt.Errorf("get inventory of %s: %w", t.ThingName, err))
	}
	log = log.With(slog.Int64("version", dev.Version), slog.String("status", string(dev.Status)))
	switch dev.Status {
	case fleet.StatusActive:
		return h.activate(ctx, log, dev)
	case fleet.StatusRevoked:
		return h.revoke(ctx, log, dev)
	case fleet.StatusDecommissioned:
		return h.remove(ctx, log, dev.ThingName, dev.CertificateID, strconv.FormatInt(dev.Version, 10))
	default:
		h.reject(ctx, "bad_item", fmt.Errorf("inventory item %s has unknown status %q: %w", dev.ThingName, dev.Status, fleet.ErrInvalid))
		return nil
	}
}

func (h *Handler) sagaID(thing, version string) string {
	return "replicate/" + h.region + "/" + thing + "/" + version
}

func (h *Handler) run(ctx context.Context, s saga.Saga) error {
	if h.mutate != nil {
		s.Steps = h.mutate(s.Steps)
	}
	_, err := h.runner.Run(ctx, s)
	return err
}

// activate converges an ACTIVE item: certificate registered, thing,
// attachments, the version recorded on the thing, and the certificate ACTIVE
// (last, see jitr.ActivateStep).
func (h *Handler) activate(ctx context.Context, log *slog.Logger, dev fleet.Device) error {
	if dev.OriginRegion == h.region && dev.Version == 1 {
		// The origin's own onboarding write: jitr converged this region
		// before it wrote the inventory.
		h.unchanged(ctx, log, "origin")
		return nil
	}
	want := strconv.FormatInt(dev.Version, 10)
	th, err := h.reg.DescribeThing(ctx, dev.ThingName)
	switch {
	case err == nil && th.Attributes[VersionAttribute] == want:
		// Converged to this version up to the attachments (the version is
		// recorded after them); activation is the last step, so check it.
		c, err := h.reg.DescribeCertificate(ctx, dev.CertificateID)
		if err == nil && c.Status == fleet.CertActive {
			h.unchanged(ctx, log, "version")
			return nil
		}
		if err != nil && !errors.Is(err, fleet.ErrNotFound) {
			return h.fail(ctx, log, fmt.Errorf("describe certificate %s: %w", dev.CertificateID, err))
		}
	case err != nil && !errors.Is(err, fleet.ErrNotFound):
		return h.fail(ctx, log, fmt.Errorf("describe thing %s: %w", dev.ThingName, err))
	}
	certARN := ""
	reg := saga.Step{
		Name: StepRegister,
		Do: func(ctx context.Context) (bool, error) {
			c, err := h.reg.DescribeCertificate(ctx, dev.CertificateID)
			if err == nil {
				certARN = c.ARN
				return false, nil
			}
			if !errors.Is(err, fleet.ErrNotFound) {
				return false, fmt.Errorf("describe certificate %s: %w", dev.CertificateID, err)
			}
			// Check the PEM before registering: a PEM that is another
			// certificate would otherwise be registered ACTIVE and, the step
			// having failed, never compensated.
			x, err := fleet.ParseCertificatePEM(dev.CertificatePEM)
			if err != nil {
				return false, fmt.Errorf("inventory PEM of %s: %w", dev.ThingName, err)
			}
			if id := fleet.CertificateID(x); id != dev.CertificateID {
				return false, fmt.Errorf("inventory PEM of %s is certificate %s, the item says %s: %w", dev.ThingName, id, dev.CertificateID, fleet.ErrInvalid)
			}
			c, err = h.reg.RegisterCertificate(ctx, dev.CertificatePEM, fleet.CertActive)
			if errors.Is(err, fleet.ErrAlreadyExists) {
				// Registered meanwhile (the device auto-registered here): not ours.
				c, err = h.reg.DescribeCertificate(ctx, dev.CertificateID)
				if err != nil {
					return false, fmt.Errorf("describe certificate %s: %w", dev.CertificateID, err)
				}
				certARN = c.ARN
				return false, nil
			}
			if err != nil {
				return false, fmt.Errorf("register certificate %s: %w", dev.CertificateID, err)
			}
			certARN = c.ARN
			return true, nil
		},
		Undo: func(ctx context.Context) error {
			if err := h.reg.UpdateCertificate(ctx, dev.CertificateID, fleet.CertInactive); err != nil {
				return fmt.Errorf("deactivate certificate %s: %w", dev.CertificateID, err)
			}
			if err := h.reg.DeleteCertificate(ctx, dev.CertificateID); err != nil {
				return fmt.Errorf("delete certificate %s: %w", dev.CertificateID, err)
			}
			return nil
		},
	}
	id := h.sagaID(dev.ThingName, want)
	// The thing steps need the ARN, known once the register step ran: they
	// are built lazily through a small indirection.
	lazy := func(i int) saga.Step {
		name := []string{jitr.StepCreateThing, jitr.StepAttachPrincipal, jitr.StepAttachPolicy}[i]
		return saga.Step{
			Name: name,
			Do: func(ctx context.Context) (bool, error) {
				return jitr.ThingSteps(h.reg, dev.ThingName, certARN, h.policy, id)[i].Do(ctx)
			},
			Undo: func(ctx context.Context) error {
				return jitr.ThingSteps(h.reg, dev.ThingName, certARN, h.policy, id)[i].Undo(ctx)
			},
		}
	}
	steps := []saga.Step{reg, lazy(0), lazy(1), lazy(2), h.recordVersion(dev.ThingName, want), jitr.ActivateStep(h.reg, dev.CertificateID)}
	if err := h.run(ctx, saga.Saga{Name: Function, ID: id, Steps: steps}); err != nil {
		return h.fail(ctx, log, fmt.Errorf("converge %s to ACTIVE: %w", dev.ThingName, err))
	}
	log.InfoContext(ctx, "registry converged", slog.String("to", string(dev.Status)))
	h.metrics.Count("Converged", 1, obs.D("Function", Function), obs.D("Status", string(dev.Status)))
	return nil
}

// recordVersion records on the thing the inventory version its attachments
// were converged to, so that the next record of this version costs only the
// reads. It runs after the attachments and before activation (which stays
// last, see jitr.ActivateStep); its compensation restores the previous value.
func (h *Handler) recordVersion(thing, version string) saga.Step {
	prev := ""
	return saga.Step{
		Name: StepRecordVersion,
		Do: func(ctx context.Context) (bool, error) {
			th, err := h.reg.DescribeThing(ctx, thing)
			if err != nil {
				return false, fmt.Errorf("describe thing %s: %w", thing, err)
			}
			prev = th.Attributes[VersionAttribute]
			if prev == version {
				return false, nil
			}
			if err := h.reg.UpdateThingAttributes(ctx, thing, map[string]string{VersionAttribute: version}); err != nil {
				return false, fmt.Errorf("record version %s on thing %s: %w", version, thing, err)
			}
			return true, nil
		},
		Undo: func(ctx context.Context) error {
			// An empty value removes the attribute (AWS UpdateThing).
			if err := h.reg.UpdateThingAttributes(ctx, thing, map[string]string{VersionAttribute: prev}); err != nil {
				return fmt.Errorf("restore version on thing %s: %w", thing, err)
			}
			return nil
		},
	}
}

// revoke makes the certificate REVOKED here. A certificate unknown here needs
// nothing: should the device present it, jitr finds the item REVOKED and
// revokes it then.
func (h *Handler) revoke(ctx context.Context, log *slog.Logger, dev fleet.Device) error {
	c, err := h.reg.DescribeCertificate(ctx, dev.CertificateID)
	switch {
	case errors.Is(err, fleet.ErrNotFound) || err == nil && c.Status == fleet.CertRevoked:
		h.unchanged(ctx, log, "revoked")
		return nil
	case err != nil:
		return h.fail(ctx, log, fmt.Errorf("describe certificate %s: %w", dev.CertificateID, err))
	}
	step := saga.Step{
		Name: StepRevoke,
		Do: func(ctx context.Context) (bool, error) {
			if err := h.reg.UpdateCertificate(ctx, dev.CertificateID, fleet.CertRevoked); err != nil {
				return false, fmt.Errorf("revoke certificate %s: %w", dev.CertificateID, err)
			}
			return true, nil
		},
	}
	if err := h.run(ctx, saga.Saga{Name: Function, ID: h.sagaID(dev.ThingName, strconv.FormatInt(dev.Version, 10)), Steps: []saga.Step{step}}); err != nil {
		return h.fail(ctx, log, fmt.Errorf("revoke %s: %w", dev.ThingName, err))
	}
	log.InfoContext(ctx, "registry converged", slog.String("to", string(fleet.StatusRevoked)))
	h.metrics.Count("Converged", 1, obs.D("Function", Function), obs.D("Status", string(fleet.StatusRevoked)))
	return nil
}

// removal is what a removal found in the registry: the thing (if any) and
// every certificate to remove with the policies attached to it.
type removal struct {
	thing     *fleet.Thing
	principal []string // principals attached to the thing, sorted
	certs     []fleet.Certificate
	policies  map[string][]string // by certificate ARN
}

// plan reads what removing thing means in this region: the thing, its
// principals, the certificates named by the item (or old image) and by the
// thing's RemovingAttribute, and their policies.
func (h *Handler) plan(ctx context.Context, thing, certID string) (removal, error) {
	var p removal
	ids := map[string]bool{}
	if certID != "" {
		ids[certID] = true
	}
	th, err := h.reg.DescribeThing(ctx, thing)
	switch {
	case err == nil:
		p.thing = &th
		prs, err := h.reg.ListThingPrincipals(ctx, thing)
		if err != nil && !errors.Is(err, fleet.ErrNotFound) {
			return p, fmt.Errorf("list principals of thing %s: %w", thing, err)
		}
		p.principal = prs
		for _, arn := range prs {
			if i := lastSlash(arn); i >= 0 && isCertID(arn[i+1:]) {
				ids[arn[i+1:]] = true
			}
		}
		for _, id := range strings.Split(th.Attributes[RemovingAttribute], ".") {
			if isCertID(id) {
				ids[id] = true
			}
		}
	case !errors.Is(err, fleet.ErrNotFound):
		return p, fmt.Errorf("describe thing %s: %w", thing, err)
	}
	p.policies = map[string][]string{}
	for _, id := range sortedKeys(ids) {
		c, err := h.reg.DescribeCertificate(ctx, id)
		if errors.Is(err, fleet.ErrNotFound) {
			continue
		}
		if err != nil {
			return p, fmt.Errorf("describe certificate %s: %w", id, err)
		}
		pols, err := h.reg.ListAttachedPolicies(ctx, c.ARN)
		if err != nil {
			return p, fmt.Errorf("list policies of %s: %w", c.ARN, err)
		}
		p.certs = append(p.certs, c)
		p.policies[c.ARN] = pols
	}
	return p, nil
}

func lastSlash(s string) int {
	return strings.LastIndexByte(s, '/')
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// remove deletes the thing and its certificates here. The steps:
//
//  1. mark the thing with the certificates being removed (RemovingAttribute),
//     so that a redelivery after a crash still finds a certificate once it
//     is detached (a REMOVE record need not carry the old image);
//  2. detach the policies of each certificate;
//  3. detach each certificate from the thing;
//  4. deactivate each ACTIVE certificate;
//  5. delete each certificate;
//  6. delete the thing (last: nothing after it can fail).
//
// Every step but the last is compensated exactly: a deleted certificate is
// registered again from its PEM, a deactivated one re-activated.
func (h *Handler) remove(ctx context.Context, log *slog.Logger, thing, certID, version string) error {
	p, err := h.plan(ctx, thing, certID)
	if err != nil {
		return h.fail(ctx, log, fmt.Errorf("plan removal of %s: %w", thing, err))
	}
	if p.thing == nil && len(p.certs) == 0 {
		h.unchanged(ctx, log, "removed")
		return nil
	}
	var steps []saga.Step
	if p.thing != nil && len(p.certs) > 0 {
		ids := make([]string, len(p.certs))
		for i, c := range p.certs {
			ids[i] = c.ID
		}
		mark, prev := strings.Join(ids, "."), p.thing.Attributes[RemovingAttribute]
		steps = append(steps, saga.Step{
			Name: StepMark,
			Do: func(ctx context.Context) (bool, error) {
				if prev == mark {
					return false, nil
				}
				if err := h.reg.UpdateThingAttributes(ctx, thing, map[string]string{RemovingAttribute: mark}); err != nil {
					return false, fmt.Errorf("mark thing %s for removal: %w", thing, err)
				}
				return true, nil
			},
			Undo: func(ctx context.Context) error {
				if err := h.reg.UpdateThingAttributes(ctx, thing, map[string]string{RemovingAttribute: prev}); err != nil {
					return fmt.Errorf("unmark thing %s: %w", thing, err)
				}
				return nil
			},
		})
	}
	for _, c := range p.certs {
		for _, pol := range p.policies[c.ARN] {
			steps = append(steps, saga.Step{
				Name: StepDetachPolicies + "/" + c.ID[:8] + "/" + pol,
				Do: func(ctx context.Context) (bool, error) {
					if err := h.reg.DetachPolicy(ctx, pol, c.ARN); err != nil {
						return false, fmt.Errorf("detach policy %s from %s: %w", pol, c.ARN, err)
					}
					return true, nil
				},
				Undo: func(ctx context.Context) error {
					if err := h.reg.AttachPolicy(ctx, pol, c.ARN); err != nil {
						return fmt.Errorf("re-attach policy %s to %s: %w", pol, c.ARN, err)
					}
					return nil
				},
			})
		}
	}
	for _, arn := range p.principal {
		steps = append(steps, saga.Step{
			Name: StepDetachThing + "/" + arn[lastSlash(arn)+1:],
			Do: func(ctx context.Context) (bool, error) {
				if err := h.reg.DetachThingPrincipal(ctx, thing, arn); err != nil {
					return false, fmt.Errorf("detach %s from thing %s: %w", arn, thing, err)
				}
				return true, nil
			},
			Undo: func(ctx context.Context) error {
				if err := h.reg.AttachThingPrincipal(ctx, thing, arn); err != nil {
					return fmt.Errorf("re-attach %s to thing %s: %w", arn, thing, err)
				}
				return nil
			},
		})
	}
	for _, c := range p.certs {
		if c.Status != fleet.CertActive {
			continue // only an ACTIVE certificate must be deactivated before deletion
		}
		steps = append(steps, saga.Step{
			Name: StepDeactivate + "/" + c.ID[:8],
			Do: func(ctx context.Context) (bool, error) {
				if err := h.reg.UpdateCertificate(ctx, c.ID, fleet.CertInactive); err != nil {
					return false, fmt.Errorf("deactivate certificate %s: %w", c.ID, err)
				}
				return true, nil
			},
			Undo: func(ctx context.Context) error {
				if err := h.reg.UpdateCertificate(ctx, c.ID, fleet.CertActive); err != nil {
					return fmt.Errorf("re-activate certificate %s: %w", c.ID, err)
				}
				return nil
			},
		})
	}
	for i, c := range p.certs {
		st := saga.Step{
			Name: StepDeleteCert + "/" + c.ID[:8],
			Do: func(ctx context.Context) (bool, error) {
				if err := h.reg.DeleteCertificate(ctx, c.ID); err != nil {
					return false, fmt.Errorf("delete certificate %s: %w", c.ID, err)
				}
				return true, nil
			},
		}
		if p.thing != nil || i < len(p.certs)-1 {
			// Not the last step: a later failure needs it back, from its PEM.
			st.Undo = func(ctx context.Context) error {
				// An ACTIVE certificate was deactivated first; that step's
				// compensation re-activates it.
				status := c.Status
				if status == fleet.CertActive {
					status = fleet.CertInactive
				}
				if _, err := h.reg.RegisterCertificate(ctx, c.PEM, status); err != nil && !errors.Is(err, fleet.ErrAlreadyExists) {
					return fmt.Errorf("re-register certificate %s: %w", c.ID, err)
				}
				return nil
			}
		}
		steps = append(steps, st)
	}
	if p.thing != nil {
		steps = append(steps, saga.Step{
			Name: StepDeleteThing,
			Do: func(ctx context.Context) (bool, error) {
				if err := h.reg.DeleteThing(ctx, thing); err != nil {
					return false, fmt.Errorf("delete thing %s: %w", thing, err)
				}
				return true, nil
			},
		})
	}
	if err := h.run(ctx, saga.Saga{Name: Function, ID: h.sagaID(thing, version), Steps: steps}); err != nil {
		return h.fail(ctx, log, fmt.Errorf("remove %s: %w", thing, err))
	}
	log.InfoContext(ctx, "registry converged", slog.String("to", "removed"))
	h.metrics.Count("Converged", 1, obs.D("Function", Function), obs.D("Status", "REMOVED"))
	return nil
}

func (h *Handler) unchanged(ctx context.Context, log *slog.Logger, why string) {
	log.DebugContext(ctx, "registry already converged", slog.String("why", why))
	h.metrics.Count("Converged", 1, obs.D("Function", Function), obs.D("Status", "UNCHANGED"))
}

func (h *Handler) reject(ctx context.Context, reason string, why error) {
	h.log.LogAttrs(ctx, slog.LevelWarn, "event rejected", slog.String("function", Function),
		slog.String("reason", reason), slog.String("error", why.Error()))
	h.metrics.Count("Rejected", 1, obs.D("Function", Function), obs.D("Reason", reason))
}

func (h *Handler) fail(ctx context.Context, log *slog.Logger, err error) error {
	log.ErrorContext(ctx, "replicate failed", slog.String("error", err.Error()), slog.Bool("retryable", saga.IsRetryable(err)))
	return err
}
