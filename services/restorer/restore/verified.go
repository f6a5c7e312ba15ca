// verified: the record of a verified backup on the Cluster, and the guard every phase after
// prepare passes before it changes anything.

package restore

import (
	"context"
	"encoding/json"
	"fmt"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
)

// Verification is what prepare verified for one restore, kept on its Cluster in
// AnnotationRestoreVerified with the pause. An EtcdRestore's recorded state (under KKP's
// schema an annotation anyone who may edit the object can write) is never believed without
// it: a restore whose Cluster holds no Verification of its own uid never verified a backup
// here, never paused the cluster, and may not tear anything down.
type Verification struct {
	UID         string `json:"uid"`
	Restore     string `json:"restore"`
	Destination string `json:"destination"`
	ObjectKey   string `json:"objectKey"`
	SHA256      string `json:"sha256"`
}

// verificationOf returns the Verification c holds, if it holds a readable one.
func verificationOf(c *kubermaticv1.Cluster) (Verification, bool) {
	var v Verification
	raw := c.Annotations[kubermaticv1.AnnotationRestoreVerified]
	if raw == "" || json.Unmarshal([]byte(raw), &v) != nil {
		return Verification{}, false
	}
	return v, true
}

// pausedBy reports whether c holds rs's Verification: rs verified its backup and paused c (or
// found it paused, as AnnotationPausedBeforeRestore says).
func pausedBy(c *kubermaticv1.Cluster, rs *kubermaticv1.EtcdRestore) bool {
	v, ok := verificationOf(c)
	return ok && v.UID == string(rs.UID) && v.Restore == Lock(rs)
}

// matches reports whether rs's recorded state is the backup v verified.
func (v Verification) matches(s kubermaticv1.EtcdRestoreStatus) bool {
	return v.Destination == s.Destination && v.ObjectKey == s.ObjectKey && v.SHA256 == s.SHA256
}

// pausePatch pauses c and records v in one write.
func pausePatch(v Verification) []byte {
	rec, _ := json.Marshal(v)
	b, _ := json.Marshal(map[string]any{
		"metadata": map[string]any{"annotations": map[string]any{kubermaticv1.AnnotationRestoreVerified: string(rec)}},
		"spec":     map[string]any{"pause": true},
	})
	return b
}

// lockedCluster returns rs's Cluster for a phase after prepare, once it has checked what that
// phase may not take from rs's recorded state: the cluster lives in rs's namespace, it holds
// rs's Verification, and the lock is rs's (taken again if someone removed it; another
// restore's fails this one). Each refusal ends the restore; one of a restore that never
// paused the cluster leaves the cluster exactly as it is.
func (r *Reconciler) lockedCluster(ctx context.Context, rs *kubermaticv1.EtcdRestore) (*kubermaticv1.Cluster, error) {
	cluster, err := r.cluster(ctx, rs)
	if err != nil {
		return nil, err
	}
	if cluster == nil {
		return nil, r.fail(ctx, rs, "ClusterNotFound", fmt.Sprintf("cluster %q was deleted during the restore.",
			rs.Spec.Cluster.Name))
	}
	if ns := cluster.NamespaceName(); rs.Namespace != ns {
		return nil, r.fail(ctx, rs, kubermaticv1.ReasonClusterNamespaceMismatch, fmt.Sprintf(
			"the EtcdRestore is in namespace %q, but cluster %q lives in %q. Nothing was changed.",
			rs.Namespace, cluster.Name, ns))
	}
	if !pausedBy(cluster, rs) {
		return nil, r.failUnlocked(ctx, rs, cluster, "NotVerified", fmt.Sprintf(
			"the restore's recorded phase is %s, but cluster %s holds no verification of this restore's backup by the "+
				"restorer (the phase was not reached here: a status written by hand, or a restore from before this check)",
			rs.Status.Phase, cluster.Name))
	}
	switch holder := cluster.Annotations[kubermaticv1.AnnotationActiveRestore]; holder {
	case Lock(rs):
		return cluster, nil
	case "":
		// Taken again mid-restore: the Verification says this restore paused the cluster.
		return nil, r.patchCluster(ctx, cluster, lockPatch(cluster, Lock(rs), false))
	default:
		return nil, r.fail(ctx, rs, "LockLost", fmt.Sprintf(
			"cluster %s was locked by EtcdRestore %s during this restore; this one stopped. The cluster stays paused.",
			cluster.Name, holder))
	}
}
