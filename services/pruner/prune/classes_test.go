package prune

import (
	"fmt"
	"testing"

	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
)

// A deletion whose destination this replica does not know yet (its view of the Seed is behind
// the planner's) is retried; the other configuration errors end it at once.
func TestADeletionInADestinationNotKnownYetIsRetried(t *testing.T) {
	reason, err := deleteFailures.Classify(fmt.Errorf("%w: %q is not configured in seed kubermatic/kubermatic",
		destination.ErrNotFound, "locked"))
	if reason != "DestinationNotFound" || bus.IsPermanent(err) {
		t.Fatalf("an unknown destination: reason %q, permanent %v; want DestinationNotFound, retried", reason,
			bus.IsPermanent(err))
	}
	reason, err = deleteFailures.Classify(fmt.Errorf("%w: the bucket's keys are refused", destination.ErrCredentials))
	if reason != "CredentialsInvalid" || !bus.IsPermanent(err) {
		t.Fatalf("refused credentials: reason %q, permanent %v; want CredentialsInvalid, permanent", reason,
			bus.IsPermanent(err))
	}
}
