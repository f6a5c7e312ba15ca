// status: the EtcdRestore's phase and message, under this project's CRD or KKP's.

package restore

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// setPhase writes phase and message (and what mutate sets) to the status, with an Event of
// eventType/reason when eventType is set and the phase or message changed.
func (r *Reconciler) setPhase(ctx context.Context, rs *kubermaticv1.EtcdRestore, phase, eventType, reason,
	msg string, mutate func(*kubermaticv1.EtcdRestoreStatus)) error {
	state := *rs.Status.DeepCopy()
	s := &state
	if s.Phase != phase || s.PhaseTime == nil {
		t := metav1.NewTime(r.now())
		s.PhaseTime = &t
	}
	changed := s.Phase != phase || s.Message != msg
	s.Phase, s.Message = phase, msg
	if mutate != nil {
		mutate(s)
	}
	if !changed && (mutate == nil || sameJSON(state, rs.Status)) {
		return nil
	}
	if err := r.writeStatus(ctx, rs, state); err != nil {
		return err
	}
	if changed && eventType != "" {
		r.event(rs, eventType, reason, "Restore", msg)
	}
	if changed && r.Publish != nil {
		r.Publish(ctx, statusEvent(rs))
	}
	return nil
}

// statusEvent is the status event of a restore's phase change, for subscribers.
func statusEvent(r *kubermaticv1.EtcdRestore) *etcdbackupv1.StatusEvent {
	phase := etcdbackupv1.Phase_PHASE_RUNNING
	switch r.Status.Phase {
	case kubermaticv1.RestorePhaseCompleted:
		phase = etcdbackupv1.Phase_PHASE_COMPLETED
	case kubermaticv1.RestorePhaseFailed:
		phase = etcdbackupv1.Phase_PHASE_FAILED
	}
	msg := r.Status.Message
	if r.Status.Phase != "" {
		msg = r.Status.Phase + ": " + msg
	}
	return &etcdbackupv1.StatusEvent{
		Config:     &etcdbackupv1.ConfigRef{Namespace: r.Namespace, Name: r.Name, Uid: string(r.UID)},
		Cluster:    r.Spec.Cluster.Name,
		BackupName: r.Spec.BackupName,
		Stage:      etcdbackupv1.Stage_STAGE_RESTORER,
		Operation:  etcdbackupv1.Operation_OPERATION_RESTORE,
		Phase:      phase,
		Message:    msg,
		ObjectKey:  r.Status.ObjectKey,
		Sha256:     r.Status.SHA256,
	}
}

// writeStatus makes state the restore's status. Under a CRD that keeps all of it (this
// project's) that is one status update. Under one that keeps less (KKP's: a required phase of
// an enum without Failed, restoreTime, nothing else) the whole status goes to the
// AnnotationRestoreStatus annotation, read back before status, and status gets what its
// schema takes. A status write the schema refuses is not retried, so it neither loops nor
// blocks the restore. rs ends with the server's metadata and state as its status.
func (r *Reconciler) writeStatus(ctx context.Context, rs *kubermaticv1.EtcdRestore,
	state kubermaticv1.EtcdRestoreStatus) error {
	if _, annotated := rs.Annotations[kubermaticv1.AnnotationRestoreStatus]; annotated {
		served := rs.Status
		if err := r.annotate(ctx, rs, state); err != nil {
			return err
		}
		return r.project(ctx, rs, served, state)
	}
	obj := rs.DeepCopy()
	obj.Status = state
	err := r.Client.Status().Update(ctx, obj)
	switch {
	case err == nil && sameJSON(obj.Status, state):
		*rs = *obj
		return nil
	case err == nil:
		*rs = *obj // the schema pruned fields: it keeps less than this status
	case apierrors.IsInvalid(err):
		r.refused.Store(client.ObjectKeyFromObject(rs), state.Phase)
		r.Log.Debug("status refused by the EtcdRestore schema; kept in the annotation", "restore", Lock(rs), "err", err)
	default:
		return fmt.Errorf("update status of %s: %w", Lock(rs), err)
	}
	if err := r.annotate(ctx, rs, state); err != nil {
		return err
	}
	rs.Status = state
	return nil
}

// annotate writes state to the AnnotationRestoreStatus annotation.
func (r *Reconciler) annotate(ctx context.Context, rs *kubermaticv1.EtcdRestore,
	state kubermaticv1.EtcdRestoreStatus) error {
	b, err := json.Marshal(state)
	if err != nil {
		return err
	}
	patched := rs.DeepCopy()
	if patched.Annotations == nil {
		patched.Annotations = map[string]string{}
	}
	patched.Annotations[kubermaticv1.AnnotationRestoreStatus] = string(b)
	if err := r.Client.Patch(ctx, patched, client.MergeFromWithOptions(rs,
		client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("annotate status of %s: %w", Lock(rs), err)
	}
	*rs = *patched
	return nil
}

// project writes to status what a schema that keeps less can take of state: its phase and
// restoreTime, when they differ from served. A refused write (a phase outside the schema's
// enum, such as Failed under KKP's) is left at that: the annotation, an Event and the bus say
// it. rs ends with state as its status.
func (r *Reconciler) project(ctx context.Context, rs *kubermaticv1.EtcdRestore, served,
	state kubermaticv1.EtcdRestoreStatus) error {
	defer func() { rs.Status = state }()
	if state.Phase == "" || (served.Phase == state.Phase && served.RestoreTime.Unix() == state.RestoreTime.Unix()) {
		return nil
	}
	if p, ok := r.refused.Load(client.ObjectKeyFromObject(rs)); ok && p == state.Phase {
		return nil
	}
	obj := rs.DeepCopy()
	obj.Status = kubermaticv1.EtcdRestoreStatus{Phase: state.Phase, RestoreTime: state.RestoreTime}
	if err := r.Client.Status().Update(ctx, obj); err != nil {
		if apierrors.IsInvalid(err) {
			r.refused.Store(client.ObjectKeyFromObject(rs), state.Phase)
			r.Log.Debug("phase refused by the EtcdRestore schema; it is in the annotation", "restore", Lock(rs), "phase",
				state.Phase, "err", err)
			return nil
		}
		return fmt.Errorf("update status of %s: %w", Lock(rs), err)
	}
	*rs = *obj
	return nil
}

func sameJSON(a, b any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(x) == string(y)
}

func (r *Reconciler) event(rs *kubermaticv1.EtcdRestore, eventType, reason, action, msg string) {
	if r.Recorder != nil {
		r.Recorder.Eventf(rs, nil, eventType, reason, action, "%s", msg)
	}
}

func (r *Reconciler) expired(rs *kubermaticv1.EtcdRestore) bool {
	return rs.Status.StartTime != nil && r.now().Sub(rs.Status.StartTime.Time) > r.Opts.Timeout
}

func (r *Reconciler) sincePhase(rs *kubermaticv1.EtcdRestore) time.Duration {
	if rs.Status.PhaseTime == nil {
		return 0
	}
	return r.now().Sub(rs.Status.PhaseTime.Time)
}
