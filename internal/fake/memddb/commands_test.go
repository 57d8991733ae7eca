package memddb_test

import (
	"testing"

	"github.com/mriot/mriot/internal/core/contract"
	"github.com/mriot/mriot/internal/fake/memddb"
	"github.com/mriot/mriot/internal/testkit/contracttest"
)

func TestCommandsContract(t *testing.T) {
	contracttest.Commands(t, func(t *testing.T) contract.Commands {
		g := memddb.NewGlobalTable("Commands", memddb.CommandsKey, regions)
		t.Cleanup(g.Close)
		return memddb.NewCommands(g.Replica("eu-west-1"))
	})
}
