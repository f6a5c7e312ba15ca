// lock: the Cluster's active-restore annotation, the record of its pause, and the merge
// patches that take and release them.

package restore

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/journal"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Lock is the value of the Cluster's active-restore annotation that restore holds.
func Lock(rs *kubermaticv1.EtcdRestore) string { return rs.Namespace + "/" + rs.Name }

// cluster returns the restore's Cluster, nil if it does not exist.
func (r *Reconciler) cluster(ctx context.Context, rs *kubermaticv1.EtcdRestore) (*kubermaticv1.Cluster, error) {
	var c kubermaticv1.Cluster
	if err := r.Client.Get(ctx, types.NamespacedName{Name: rs.Spec.Cluster.Name}, &c); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	return &c, nil
}

// stale reports whether the restore holding a lock no longer exists.
func (r *Reconciler) stale(ctx context.Context, holder string) bool {
	ns, name, ok := strings.Cut(holder, "/")
	if !ok {
		return true
	}
	var other kubermaticv1.EtcdRestore
	err := r.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &other)
	return apierrors.IsNotFound(err)
}

// lockPatch takes the lock for holder. With recordPause, it records in the same write whether
// the cluster is paused now, before the restore pauses it (AnnotationPausedBeforeRestore):
// the lock and the record are one write, so no crash falls between them.
func lockPatch(c *kubermaticv1.Cluster, holder string, recordPause bool) []byte {
	ann := map[string]any{kubermaticv1.AnnotationActiveRestore: holder}
	if recordPause {
		// A new lock: any earlier restore's verification goes with it.
		ann[kubermaticv1.AnnotationRestoreVerified] = nil
		ann[kubermaticv1.AnnotationPausedBeforeRestore] = nil
		if c.Spec.Pause {
			ann[kubermaticv1.AnnotationPausedBeforeRestore] = "true"
		}
	}
	b, _ := json.Marshal(map[string]any{"metadata": map[string]any{
		"resourceVersion": c.ResourceVersion,
		"annotations":     ann,
	}})
	return b
}

// pauseWord says what the end of a restore does to the cluster's pause.
func pauseWord(c *kubermaticv1.Cluster) string {
	if c.Annotations[kubermaticv1.AnnotationPausedBeforeRestore] == "true" {
		return "left paused, as it was before the restore"
	}
	return "unpaused"
}

// unlockPatch removes the lock, unpauses if asked and the cluster was not paused before the
// restore began, and, with lastRestart (a restore that ended), rolls the control plane the way
// KKP does and starts etcd's next timeline (journal.NewTimeline of the same time).
func unlockPatch(c *kubermaticv1.Cluster, unpause bool, lastRestart time.Time) []byte {
	ann := map[string]any{kubermaticv1.AnnotationActiveRestore: nil, kubermaticv1.AnnotationPausedBeforeRestore: nil,
		kubermaticv1.AnnotationRestoreVerified: nil}
	if !lastRestart.IsZero() {
		ann[kubermaticv1.AnnotationLastRestart] = lastRestart.UTC().Format(time.RFC3339)
		ann[kubermaticv1.AnnotationEtcdTimeline] = journal.NewTimeline(lastRestart).Name
	}
	p := map[string]any{"metadata": map[string]any{"resourceVersion": c.ResourceVersion, "annotations": ann}}
	if unpause && c.Annotations[kubermaticv1.AnnotationPausedBeforeRestore] != "true" {
		p["spec"] = map[string]any{"pause": false}
	}
	b, _ := json.Marshal(p)
	return b
}

// unlock releases this restore's lock on its Cluster (and, asked to, unpauses it if this
// restore paused it, and rolls its control plane with lastRestart set), reading the Cluster
// afresh on a conflict: KKP writes Clusters often, and a lock this restore holds is its own to
// release.
func (r *Reconciler) unlock(ctx context.Context, rs *kubermaticv1.EtcdRestore, unpause bool,
	lastRestart time.Time) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var c kubermaticv1.Cluster
		if err := r.API.Get(ctx, types.NamespacedName{Name: rs.Spec.Cluster.Name}, &c); err != nil {
			return client.IgnoreNotFound(err)
		}
		if c.Annotations[kubermaticv1.AnnotationActiveRestore] != Lock(rs) {
			return nil
		}
		patch := unlockPatch(&c, unpause && pausedBy(&c, rs), lastRestart)
		return r.Client.Patch(ctx, &c, client.RawPatch(types.MergePatchType, patch))
	})
}

// patchCluster applies a JSON merge patch: only the fields named change.
func (r *Reconciler) patchCluster(ctx context.Context, c *kubermaticv1.Cluster, patch []byte) error {
	if err := r.Client.Patch(ctx, c, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return fmt.Errorf("patch cluster %s: %w", c.Name, err)
	}
	return nil
}
