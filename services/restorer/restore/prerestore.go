// prerestore: a backup of the cluster's etcd as it is, taken through the normal pipeline
// before the restore touches it, so that a restore from the wrong backup can be undone.

package restore

import (
	"context"
	"fmt"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/endpoints"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
)

// LabelPreRestore on a pre-restore config names the EtcdRestore it backs up for.
const LabelPreRestore = "etcdbackup.k8c.io/pre-restore"

// preRestoreBackup backs rs's cluster up before the restore: a one-time EtcdBackupConfig
// pre-restore-<restore>, controlled by rs (it goes with rs, and its backup then stays for the
// pruner's deletion grace), which the scheduler runs although the cluster is locked
// (Cluster.PreRestoreBackupDue). The backup's name is recorded in status.preRestoreBackup. An
// unhealthy etcd (the usual reason to restore), a failed backup or one not done within
// PreRestoreTimeout is recorded in status.preRestoreSkipped, with a Warning Event, and the
// restore goes on without it. done is false while the restore waits for the backup.
func (r *Reconciler) preRestoreBackup(ctx context.Context, rs *kubermaticv1.EtcdRestore,
	cluster *kubermaticv1.Cluster) (ctrl.Result, bool, error) {
	if !r.Opts.PreRestoreBackup || rs.Status.PreRestoreBackup != "" || rs.Status.PreRestoreSkipped != "" {
		return ctrl.Result{}, true, nil
	}
	name := kubermaticv1.PreRestoreConfig(rs.Name)
	var cfg kubermaticv1.EtcdBackupConfig
	err := r.API.Get(ctx, types.NamespacedName{Namespace: rs.Namespace, Name: name}, &cfg)
	if apierrors.IsNotFound(err) {
		if why := r.unhealthy(ctx, rs, cluster); why != "" {
			return r.skipPreRestore(ctx, rs, "etcd is not healthy ("+why+"): the restore goes on without a backup of it")
		}
		return r.createPreRestore(ctx, rs, cluster)
	}
	if err != nil {
		return ctrl.Result{}, false, fmt.Errorf("get etcdbackupconfig %s/%s: %w", rs.Namespace, name, err)
	}
	if !metav1.IsControlledBy(&cfg, rs) {
		return r.skipPreRestore(ctx, rs, fmt.Sprintf("EtcdBackupConfig %s exists and is not this restore's", name))
	}
	for _, e := range cfg.Status.Backups() {
		switch e.BackupPhase {
		case kubermaticv1.PhaseCompleted:
			msg := fmt.Sprintf("cluster %s backed up before the restore as %s; undo this restore with an EtcdRestore of "+
				"backup %s", cluster.Name, e.BackupName, e.BackupName)
			return ctrl.Result{RequeueAfter: r.Opts.Poll}, false, r.setPhase(ctx, rs, "", corev1.EventTypeNormal,
				"PreRestoreBackup", msg, func(s *kubermaticv1.EtcdRestoreStatus) {
					s.PreRestoreBackup = e.BackupName
					s.Progress = "verifying"
				})
		case kubermaticv1.PhaseFailed:
			return r.skipPreRestore(ctx, rs, fmt.Sprintf("the pre-restore backup %s failed (%s): the restore goes on "+
				"without it", e.BackupName, e.BackupMessage))
		}
	}
	if c := cfg.Status.Condition(kubermaticv1.ConditionSchedulingActive); c != nil && c.Status == corev1.ConditionFalse {
		return r.skipPreRestore(ctx, rs, fmt.Sprintf("the pre-restore backup cannot run (%s: %s): the restore goes on "+
			"without it", c.Reason, c.Message))
	}
	// From the lock (status.startTime, this restorer's clock), not the config's creation (the
	// API server's).
	if st := rs.Status.StartTime; st != nil && r.now().Sub(st.Time) > r.Opts.PreRestoreTimeout {
		return r.skipPreRestore(ctx, rs, fmt.Sprintf("the pre-restore backup did not complete within %s: the restore "+
			"goes on without it", r.Opts.PreRestoreTimeout))
	}
	return ctrl.Result{RequeueAfter: r.Opts.Poll}, false, nil
}

// unhealthy says why rs's cluster's etcd is not healthy ("" when every member answers).
func (r *Reconciler) unhealthy(ctx context.Context, rs *kubermaticv1.EtcdRestore,
	cluster *kubermaticv1.Cluster) string {
	target, err := endpoints.Resolve(ctx, r.API, cluster, rs.Namespace)
	if err != nil {
		return err.Error()
	}
	h, err := CheckEtcd(ctx, target, len(target.Endpoints))
	if err != nil {
		return fmt.Sprintf("%d members, %d of %d endpoints healthy: %v", h.Members, h.Healthy, len(target.Endpoints), err)
	}
	return ""
}

// createPreRestore creates rs's pre-restore config, in the destination of the backup rs
// restores (else the default).
func (r *Reconciler) createPreRestore(ctx context.Context, rs *kubermaticv1.EtcdRestore,
	cluster *kubermaticv1.Cluster) (ctrl.Result, bool, error) {
	dest := rs.Spec.Destination
	if b, err := Locate(ctx, r.API, rs); err == nil {
		dest = b.Destination
	}
	if d, err := r.Destinations.Lookup(ctx, dest); err == nil {
		dest = d.Name // the Seed's default now, not whatever it is when the backup runs
	}
	keep := 1
	name := kubermaticv1.PreRestoreConfig(rs.Name)
	cfg := &kubermaticv1.EtcdBackupConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: rs.Namespace, Name: name,
			Labels: map[string]string{LabelPreRestore: rs.Name}},
		Spec: kubermaticv1.EtcdBackupConfigSpec{
			Name: name, Keep: &keep, Destination: dest,
			Cluster: corev1.ObjectReference{APIVersion: kubermaticv1.GroupVersion.String(), Kind: "Cluster",
				Name: cluster.Name},
		},
	}
	if err := controllerutil.SetControllerReference(rs, cfg, r.Client.Scheme()); err != nil {
		return ctrl.Result{}, false, err
	}
	if err := r.Client.Create(ctx, cfg); err != nil && !apierrors.IsAlreadyExists(err) {
		if apierrors.IsInvalid(err) || apierrors.IsForbidden(err) {
			return r.skipPreRestore(ctx, rs, fmt.Sprintf("EtcdBackupConfig %s cannot be created (%v): the restore goes on "+
				"without a backup of the cluster", name, err))
		}
		return ctrl.Result{}, false, fmt.Errorf("create etcdbackupconfig %s/%s: %w", rs.Namespace, name, err)
	}
	return ctrl.Result{RequeueAfter: r.Opts.Poll}, false, r.setPhase(ctx, rs, "", corev1.EventTypeNormal,
		"PreRestoreBackupStarted", fmt.Sprintf("cluster %s locked; backing up its etcd as it is (EtcdBackupConfig %s) "+
			"before the restore", cluster.Name, name),
		func(s *kubermaticv1.EtcdRestoreStatus) { s.Progress = "pre-restore backup" })
}

// skipPreRestore records why there is no pre-restore backup, with a Warning Event; the
// restore goes on.
func (r *Reconciler) skipPreRestore(ctx context.Context, rs *kubermaticv1.EtcdRestore,
	why string) (ctrl.Result, bool, error) {
	return ctrl.Result{RequeueAfter: r.Opts.Poll}, false, r.setPhase(ctx, rs, "", corev1.EventTypeWarning,
		"PreRestoreBackupSkipped", why, func(s *kubermaticv1.EtcdRestoreStatus) {
			s.PreRestoreSkipped = why
			s.Progress = "verifying"
		})
}
