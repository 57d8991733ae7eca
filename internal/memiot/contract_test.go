package memiot_test

import (
	"context"
	"testing"

	"github.com/mriot/mriot/internal/contract"
	"github.com/mriot/mriot/internal/memiot"
)

func TestContract(t *testing.T) {
	contract.TestRegistry(t, func(t *testing.T) contract.RegistryEnv {
		r := memiot.New("eu-west-1", "123456789012")
		return contract.RegistryEnv{
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
