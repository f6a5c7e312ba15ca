// rebuild: waiting for every member to restore and etcd to be whole, then the StatefulSet's
// own spec back, the cluster unlocked, rolled and unpaused (phase Completed).

package restore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/endpoints"
	"github.com/etcd-backup/etcdbackup/pkg/progress"
	"github.com/etcd-backup/etcdbackup/services/restorer/member"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// rebuild waits until the rebuilt StatefulSet is ready and etcd healthy with every member,
// then gives the StatefulSet its old spec back, unlocks, rolls and unpauses the cluster.
func (r *Reconciler) rebuild(ctx context.Context, rs *kubermaticv1.EtcdRestore) (ctrl.Result, error) {
	cluster, err := r.lockedCluster(ctx, rs)
	if err != nil || cluster == nil {
		return ctrl.Result{}, err
	}
	saved, err := r.saved(ctx, rs)
	if errors.Is(err, ErrSavedNotOwned) {
		return ctrl.Result{}, r.failNotOwned(ctx, rs, err)
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	if saved == nil {
		return ctrl.Result{}, r.failPaused(ctx, rs, cluster, "SavedSpecLost",
			fmt.Sprintf("ConfigMap %s/%s with the StatefulSet's spec was deleted.", rs.Namespace, SavedName(rs)))
	}
	var sts appsv1.StatefulSet
	if err := r.API.Get(ctx, types.NamespacedName{Namespace: rs.Namespace, Name: saved.Name}, &sts); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{RequeueAfter: r.Opts.Poll}, r.setPhase(ctx, rs, kubermaticv1.RestorePhaseStarted,
				corev1.EventTypeWarning, "StatefulSetGone",
				"the rebuilt StatefulSet was deleted; rebuilding it again",
				func(s *kubermaticv1.EtcdRestoreStatus) { s.Progress = "tearing down" })
		}
		return ctrl.Result{}, err
	}
	pods, err := r.pods(ctx, saved)
	if err != nil {
		return ctrl.Result{}, err
	}
	for _, p := range pods {
		if msg, failed := stepFailed(&p); failed {
			return ctrl.Result{}, r.failPaused(ctx, rs, cluster, "RestoreStepFailed", fmt.Sprintf(
				"the restore step failed in pod %s: %s. See `kubectl -n %s logs %s -c %s`.", p.Name, msg, p.Namespace, p.Name,
				StepContainer))
		}
	}
	waiting, err := r.waitingFor(ctx, rs, cluster, &sts)
	if errors.Is(err, endpoints.ErrConfig) {
		return ctrl.Result{}, r.failPaused(ctx, rs, cluster, "EtcdUnreachable", err.Error())
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	if waiting != "" {
		return r.wait(ctx, rs, cluster, pods, replicas(&sts), waiting)
	}
	return ctrl.Result{}, r.finish(ctx, rs, cluster, saved, &sts)
}

// waitingFor says what the rebuilt etcd is still waiting for: its pods ready, then every
// member healthy ("" when it is whole). An error wrapping endpoints.ErrConfig means etcd
// cannot be reached as the cluster says.
func (r *Reconciler) waitingFor(ctx context.Context, rs *kubermaticv1.EtcdRestore, cluster *kubermaticv1.Cluster,
	sts *appsv1.StatefulSet) (string, error) {
	want := replicas(sts)
	if sts.Status.ObservedGeneration < sts.Generation || int(sts.Status.ReadyReplicas) < want {
		return fmt.Sprintf("%d of %d etcd pods ready", sts.Status.ReadyReplicas, want), nil
	}
	target, err := endpoints.Resolve(ctx, r.API, cluster, rs.Namespace)
	if err != nil {
		return "", err
	}
	if h, err := CheckEtcd(ctx, target, want); err != nil {
		return fmt.Sprintf("etcd: %d members, %d of %d endpoints healthy (%v)", h.Members, h.Healthy,
			len(target.Endpoints), err), nil
	}
	return "", nil
}

// wait reports the members restored so far and what the rebuild waits for, until the timeout.
func (r *Reconciler) wait(ctx context.Context, rs *kubermaticv1.EtcdRestore, cluster *kubermaticv1.Cluster,
	pods []corev1.Pod, want int, waiting string) (ctrl.Result, error) {
	if r.expired(rs) {
		return ctrl.Result{}, r.failPaused(ctx, rs, cluster, "RebuildTimeout",
			fmt.Sprintf("after %s etcd is not healthy: %s.", r.Opts.Timeout, waiting))
	}
	done, running := membersRestored(pods)
	progress := fmt.Sprintf("members restored %d/%d", done, want)
	if fetched := r.fetched(ctx, pods); fetched != "" {
		progress += "; fetched " + fetched
	}
	msg := fmt.Sprintf("%s; waiting for %s", progress, waiting)
	if len(running) > 0 {
		msg = fmt.Sprintf("%s (restore step running in %s); waiting for %s", progress, strings.Join(running, ", "), waiting)
	}
	return ctrl.Result{RequeueAfter: r.Opts.Poll}, r.setPhase(ctx, rs, rs.Status.Phase, "", "", msg,
		func(s *kubermaticv1.EtcdRestoreStatus) {
			s.Progress = progress
		})
}

// finish ends a restore whose etcd is whole again. The StatefulSet gets its own spec back, so
// that a member replaced later does not restore this backup again and KKP finds its
// StatefulSet as it left it; the cluster is unlocked, rolled and unpaused: Completed.
func (r *Reconciler) finish(ctx context.Context, rs *kubermaticv1.EtcdRestore, cluster *kubermaticv1.Cluster, saved,
	sts *appsv1.StatefulSet) error {
	want := replicas(sts)
	sts.Spec.Template = saved.Spec.Template
	delete(sts.Annotations, AnnotationRestoreID)
	if err := r.Client.Update(ctx, sts); err != nil {
		return fmt.Errorf("give the statefulset its spec back: %w", err)
	}
	if err := r.unlock(ctx, rs, true, r.now()); err != nil {
		return err
	}
	r.cleanup(ctx, rs)
	took := r.sincePhase(rs)
	r.Metrics.steps.WithLabelValues("rebuild").Observe(took.Seconds())
	total := r.now().Sub(rs.Status.StartTime.Time)
	from := "from backup " + rs.Spec.BackupName
	if to, ok := rs.Annotations[kubermaticv1.AnnotationRestoreTo]; ok {
		from = fmt.Sprintf("to %s (point in time, from config %s's full backup and journal)", to, rs.Spec.BackupName)
	}
	if err := r.setPhase(ctx, rs, kubermaticv1.RestorePhaseCompleted, corev1.EventTypeNormal, "Completed", fmt.Sprintf(
		"etcd of cluster %s restored %s: %d members healthy after %s of rebuild; control plane rolled, cluster "+
			"unlocked and %s (%s in all)",
		cluster.Name, from, want, took.Round(time.Millisecond), pauseWord(cluster),
		total.Round(time.Millisecond)), func(s *kubermaticv1.EtcdRestoreStatus) {
		s.RestoreTime = metav1.NewTime(r.now())
		s.Progress = fmt.Sprintf("done: members restored %d/%d", want, want)
	}); err != nil {
		return err
	}
	r.Metrics.finished.WithLabelValues("completed").Inc()
	return r.removeFinalizer(ctx, rs)
}

// PodLogsOf reads the last lines of a container's log through the API server (pods/log), at
// most 8 KiB: the restore step's progress is in its last lines.
func PodLogsOf(kc kubernetes.Interface) PodLogs {
	return func(ctx context.Context, namespace, pod, container string) ([]byte, error) {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return kc.CoreV1().Pods(namespace).GetLogs(pod, &corev1.PodLogOptions{
			Container: container, TailLines: ptr.To(int64(5)), LimitBytes: ptr.To(int64(8 << 10)),
		}).DoRaw(ctx)
	}
}

// fetched says how much of the backup each member's restore step has downloaded, from the last
// progress line in its log: "etcd-0 271 of 271 MiB (100%), etcd-1 120 of 271 MiB (44%)".
// Members whose step has not started, or whose log cannot be read, are left out: the progress
// is for people, and the restore does not depend on it.
func (r *Reconciler) fetched(ctx context.Context, pods []corev1.Pod) string {
	if r.Logs == nil {
		return ""
	}
	var out []string
	for _, p := range pods {
		started := false
		for _, s := range p.Status.InitContainerStatuses {
			started = started || s.Name == StepContainer && (s.State.Running != nil || s.State.Terminated != nil)
		}
		if !started {
			continue
		}
		tail, err := r.Logs(ctx, p.Namespace, p.Name, StepContainer)
		if err != nil {
			r.Log.Debug("restore step log unreadable", "pod", p.Namespace+"/"+p.Name, "err", err)
			continue
		}
		if done, total, ok := member.LastProgress(tail); ok {
			out = append(out, p.Name+" "+progress.Say(done, total))
		}
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

// membersRestored counts the member pods whose restore step finished (exit 0) and names
// those where it runs.
func membersRestored(pods []corev1.Pod) (done int, running []string) {
	for _, p := range pods {
		for _, s := range p.Status.InitContainerStatuses {
			if s.Name != StepContainer {
				continue
			}
			switch {
			case s.State.Terminated != nil && s.State.Terminated.ExitCode == 0:
				done++
			case s.State.Running != nil:
				running = append(running, p.Name)
			}
		}
	}
	return done, running
}

// stepFailed reports a pod whose restore step failed for good: exited non-zero and was
// restarted twice since.
func stepFailed(p *corev1.Pod) (string, bool) {
	for _, s := range p.Status.InitContainerStatuses {
		if s.Name != StepContainer {
			continue
		}
		term := s.State.Terminated
		if term == nil || term.ExitCode == 0 {
			term = s.LastTerminationState.Terminated
		}
		if term != nil && term.ExitCode != 0 && s.RestartCount >= 2 {
			msg := strings.TrimSpace(term.Message)
			if msg == "" {
				msg = fmt.Sprintf("exit code %d", term.ExitCode)
			}
			return msg, true
		}
	}
	return "", false
}

func replicas(sts *appsv1.StatefulSet) int {
	if sts.Spec.Replicas == nil {
		return 1
	}
	return int(*sts.Spec.Replicas)
}

func (r *Reconciler) pods(ctx context.Context, saved *appsv1.StatefulSet) ([]corev1.Pod, error) {
	sel, err := metav1.LabelSelectorAsSelector(saved.Spec.Selector)
	if err != nil || sel.Empty() {
		sel = labels.SelectorFromSet(labels.Set{EtcdLabel: EtcdLabelValue})
	}
	var pods corev1.PodList
	if err := r.API.List(ctx, &pods, client.InNamespace(saved.Namespace),
		client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return nil, err
	}
	return pods.Items, nil
}
