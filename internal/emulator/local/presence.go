package local

import (
	"github.com/mriot/mriot/internal/fake/memddb"
)

// PresenceRuleSQL is the presence rule of template.yaml: every lifecycle
// event of the region, as is.
const PresenceRuleSQL = "SELECT * FROM '$aws/events/presence/+/+'"

// newPresenceTable is the presence global table: a replica per region with
// its stream (NEW_AND_OLD_IMAGES, as template.yaml declares it), the sparse
// ConnectedIndex, replicated last writer wins after the replication lag.
func newPresenceTable(cfg Config) *memddb.GlobalTable {
	return memddb.NewGlobalTable(PresenceTable, memddb.PresenceKey, cfg.Regions,
		memddb.WithReplicationLag(cfg.ReplicationLag), memddb.WithStreamView(memddb.ViewNewAndOldImages),
		memddb.WithAccount(AccountID), memddb.PresenceIndexes, memddb.WithDurableStream())
}

// startPresence binds the region's presence function: wired in a later step.
func (s *Stack) startPresence(r *Region, newInvoker func(fn string, h Function, attempts int) *Invoker) error {
	return nil
}
