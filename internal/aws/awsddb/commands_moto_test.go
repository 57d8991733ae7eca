package awsddb_test

import (
	"fmt"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/mriot/mriot/internal/aws/awsddb"
	"github.com/mriot/mriot/internal/core/contract"
	"github.com/mriot/mriot/internal/testkit/contracttest"
	"github.com/mriot/mriot/internal/testkit/motoserver"
)

func TestCommandsContractOnMoto(t *testing.T) {
	contracttest.Commands(t, func(t *testing.T) contract.Commands {
		s := motoserver.Start(t)
		cfg := s.Config("us-west-2")
		name := fmt.Sprintf("commands-%d", tableSeq.Add(1))
		motoserver.CreateCommandsTable(t, cfg, name)
		return awsddb.NewCommands(dynamodb.NewFromConfig(cfg), name)
	})
}
