package memiot_test

import (
	"context"
	"testing"

	"github.com/mriot/mriot/internal/core/contract"
	"github.com/mriot/mriot/internal/fake/memiot"
	"github.com/mriot/mriot/internal/testkit/contracttest"
)

// The fake implements the port the contract suite tests.
var _ contract.Registry = (*memiot.Registry)(nil)

func TestContract(t *testing.T) {
	contracttest.Registry(t, func(t *testing.T) contracttest.RegistryEnv {
		r := memiot.New("eu-west-1", "123456789012")
		return contracttest.RegistryEnv{
			Registry: r,
			RegisterCA: func(t *testing.T, caPEM string) string {
				ca, err := r.RegisterCACertificate(context.Background(), caPEM, true)
				if err != nil {
					t.Fatal(err)
				}
				return ca.ID
			},
			CreatePolicy: func(t *testing.T, name, document string) {
				if err := r.CreatePolicy(context.Background(), name, document); err != nil {
					t.Fatal(err)
				}
			},
		}
	})
}
