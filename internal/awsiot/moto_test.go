package awsiot_test

import (
	"os"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/iot"

	"github.com/mriot/mriot/internal/awsiot"
	"github.com/mriot/mriot/internal/contract"
	"github.com/mriot/mriot/internal/motoserver"
)

func TestMain(m *testing.M) { os.Exit(motoserver.Main(m)) }

// motoQuirks are moto 5.2's departures from AWS IoT that the contract suite
// meets. The adapter follows AWS; the suite notes each one at its assertion.
var motoQuirks = contract.Quirks{
	NoCACertificateIDInDescribe: true, // DescribeCertificate has no caCertificateId
	CreateThingReplaces:         true, // duplicate CreateThing replaces the thing
	RegisterWithoutCA:           true, // registers certificates of unregistered CAs
	RevokedCanBeReactivated:     true, // REVOKED -> ACTIVE is let through
	// HTTP 500 on a PEM it cannot parse.
	MalformedCertificateServerError: true,
	CACertificateARNIsCert:          true, // CA ARN is ...:cert/<id>
	NoCAAutoRegistration:            true, // allowAutoRegistration is ignored
	DetachNotAttachedIsNotFound:     true, // detaching what is not attached is a 404
	ThingNamesUnchecked:             true, // any non-empty thing name is accepted
}

// newMotoEnv is a fresh registry: its own moto account, region eu-west-1.
func newMotoEnv(t *testing.T) contract.RegistryEnv {
	s := motoserver.Start(t)
	cfg := s.Config("eu-west-1")
	return contract.RegistryEnv{
		Registry:     awsiot.New(iot.NewFromConfig(cfg)),
		RegisterCA:   func(t *testing.T, caPEM string) string { return motoserver.RegisterCA(t, cfg, caPEM) },
		CreatePolicy: func(t *testing.T, name, doc string) { motoserver.CreatePolicy(t, cfg, name, doc) },
		Quirks:       motoQuirks,
	}
}

func TestRegistryContractOnMoto(t *testing.T) {
	contract.TestRegistry(t, newMotoEnv)
}
