package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// EtcdStatefulSet is the name KKP gives a cluster's etcd StatefulSet.
const EtcdStatefulSet = "etcd"

// Kubelet plays, for one cluster namespace, the one part of Kubernetes nothing here can do:
// running pods. PVC volumes are host dirs; init containers run as the real restore-step
// program; etcd members are embedded etcd servers on the pods' data dirs, at the URLs the
// Cluster's annotations name; readiness is reported through the API. The real
// kube-controller-manager does the rest: its StatefulSet controller creates the PVCs and pods
// and rolls them, its garbage collector deletes the pods of a deleted StatefulSet, and its PVC
// protection releases deleted PVCs.
type Kubelet struct {
	env     *Env
	Cluster string
	NS      string
	Members int
	dir     string
	client  []url.URL
	peer    []url.URL

	mu      sync.Mutex
	running types.UID // the StatefulSet whose pods run
	retryAt time.Time // after a failed start, as the kubelet backs off
	etcds   []*etcdtest.Etcd
	steps   []StepRun
	err     error
	// restarts counts failed init container runs per pod (uid), as the kubelet's RestartCount.
	restarts map[types.UID]int32
	// hold stops each restore step (SIGSTOP) once it logs download progress; held are the
	// stopped ones, continued by ReleaseSteps.
	hold   bool
	held   []*os.Process
	cancel context.CancelFunc
	done   chan struct{}
}

// StepRun is one run of the restore step.
type StepRun struct {
	Pod string
	// ClusterPaused is Cluster.spec.pause while it ran.
	ClusterPaused bool
	ExitCode      int
	// Log is its output; its last line reports timings and peak memory.
	Log string
}

// StartEtcdCluster creates a Cluster named name (etcdLauncher enabled, extraSpec added to its
// spec) with its namespace and a KKP-shaped etcd StatefulSet of members, runs a Kubelet for it
// and returns once that etcd has all its members. Stop the Kubelet when done.
func (e *Env) StartEtcdCluster(ctx context.Context, name string, members int,
	extraSpec map[string]any) (*Kubelet, error) {
	k, err := e.addEtcdCluster(ctx, name, members, extraSpec)
	if err != nil {
		return nil, err
	}
	// The kubelet outlives the start: Stop ends it.
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	k.cancel, k.done = cancel, make(chan struct{})
	go func() { k.Run(runCtx); close(k.done) }()
	if err := k.WaitMembers(ctx, members); err != nil {
		k.Stop()
		return nil, err
	}
	return k, nil
}

// Client returns a client of every member; the caller closes it.
func (k *Kubelet) Client() (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: k.ClientURLs(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
}

// WaitMembers waits until etcd answers with n members.
func (k *Kubelet) WaitMembers(ctx context.Context, n int) error {
	cli, err := k.Client()
	if err != nil {
		return err
	}
	defer cli.Close()
	err = Poll(ctx, 60*time.Second, 100*time.Millisecond, func() (bool, error) {
		if err := k.Err(); err != nil {
			return false, err
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		resp, err := cli.MemberList(cctx)
		if err != nil {
			return false, err
		}
		return len(resp.Members) == n, fmt.Errorf("%d members", len(resp.Members))
	})
	if err != nil {
		return fmt.Errorf("etcd of cluster %s: %w", k.Cluster, err)
	}
	return nil
}

func (e *Env) addEtcdCluster(ctx context.Context, name string, members int, extra map[string]any) (*Kubelet, error) {
	k := &Kubelet{env: e, Cluster: name, NS: "cluster-" + name, Members: members, dir: filepath.Join(e.Opts.Dir,
		"kubelet", name)}
	var clientURLs, peerURLs []string
	for range members {
		c, err := freeURL()
		if err != nil {
			return nil, err
		}
		p, err := freeURL()
		if err != nil {
			return nil, err
		}
		k.client, k.peer = append(k.client, c), append(k.peer, p)
		clientURLs, peerURLs = append(clientURLs, c.String()), append(peerURLs, p.String())
	}
	if err := e.Client.Create(ctx,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: k.NS}}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	cluster := map[string]any{
		"apiVersion": kubermaticv1.GroupVersion.String(), "kind": "Cluster",
		"metadata": map[string]any{"name": name, "annotations": map[string]any{
			kubermaticv1.AnnotationEtcdEndpoints:    strings.Join(clientURLs, ","),
			kubermaticv1.AnnotationEtcdPeerURLs:     strings.Join(peerURLs, ","),
			kubermaticv1.AnnotationEtcdClientSecret: "none",
		}},
		"spec": map[string]any{"features": map[string]any{kubermaticv1.FeatureEtcdLauncher: true}},
	}
	for k, v := range extra {
		cluster["spec"].(map[string]any)[k] = v
	}
	if err := e.createCluster(ctx, cluster); err != nil {
		return nil, err
	}
	if err := e.Client.Create(ctx, etcdStatefulSet(name, k.NS, members)); err != nil {
		return nil, fmt.Errorf("create statefulset: %w", err)
	}
	return k, nil
}

// etcdStatefulSet is a cluster's etcd StatefulSet as KKP makes it: members pods of etcd,
// each with a data volume claimed from its template.
func etcdStatefulSet(cluster, ns string, members int) *appsv1.StatefulSet {
	labels := map[string]string{"app": "etcd", "cluster": cluster}
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: EtcdStatefulSet, Namespace: ns, Labels: labels},
		Spec: appsv1.StatefulSetSpec{
			Replicas:            ptr.To(int32(members)),
			ServiceName:         "etcd",
			PodManagementPolicy: appsv1.ParallelPodManagement,
			Selector:            &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "etcd", Image: "registry.k8s.io/etcd:3.6.5-0",
					Command: []string{"/usr/local/bin/etcd"},
					Args:    []string{"--name=$(POD_NAME)", "--data-dir=/var/run/etcd/pod_$(POD_NAME)"},
					Env: []corev1.EnvVar{{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{
						FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}},
					VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/var/run/etcd"}},
				}}},
			},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{
				ObjectMeta: metav1.ObjectMeta{Name: "data", Labels: labels},
				Spec: corev1.PersistentVolumeClaimSpec{
					AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
					Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{
						corev1.ResourceStorage: resource.MustParse("1Gi")}},
				},
			}},
		},
	}
}

// Run plays its parts until ctx is done; errors are kept for Err.
func (k *Kubelet) Run(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		if err := k.sync(ctx); ctx.Err() == nil {
			k.mu.Lock()
			k.err = err
			k.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Err is the error of the last sync, nil once one succeeds.
func (k *Kubelet) Err() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.err
}

// Steps returns the restore step runs so far.
func (k *Kubelet) Steps() []StepRun {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]StepRun(nil), k.steps...)
}

// ClientURLs are the members' client URLs.
func (k *Kubelet) ClientURLs() []string {
	var out []string
	for _, u := range k.client {
		out = append(out, u.String())
	}
	return out
}

// Stop stops playing and stops the members.
func (k *Kubelet) Stop() {
	if k.cancel != nil {
		k.cancel()
		<-k.done
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.stopMembers()
}

// StopMember stops member i's etcd as a crashed process would: its pod stays, the others run
// on, and nothing starts it again until the StatefulSet is replaced.
func (k *Kubelet) StopMember(i int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if i < len(k.etcds) && k.etcds[i] != nil {
		k.etcds[i].Stop()
		k.etcds[i] = nil
	}
}

func (k *Kubelet) stopMembers() {
	// One by one: stopped together, each waits out the others' leader elections.
	for _, e := range k.etcds {
		if e != nil {
			e.Stop()
		}
	}
	k.etcds = nil
	k.running = ""
}

func (k *Kubelet) sync(ctx context.Context) error {
	c := k.env.Client
	var sts appsv1.StatefulSet
	err := c.Get(ctx, types.NamespacedName{Namespace: k.NS, Name: EtcdStatefulSet}, &sts)
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	// Pods bound to the Node go only once the kubelet confirms they stopped.
	if err := k.finishTerminating(ctx); err != nil {
		return err
	}
	gone := apierrors.IsNotFound(err) || sts.DeletionTimestamp != nil
	k.mu.Lock()
	running := k.running
	k.mu.Unlock()
	if gone {
		if running != "" { // the kubelet stops the members
			k.mu.Lock()
			k.stopMembers()
			k.mu.Unlock()
		}
		// kube-controller-manager's garbage collector deletes the pods.
		return k.removeVolumesOfDeletedClaims(ctx)
	}
	if running == sts.UID {
		// A changed template rolls the pods: the StatefulSet controller replaces them one by
		// one; the members here keep running, and each new pod is reported ready.
		return k.reportPodsReady(ctx, &sts)
	}
	if time.Now().Before(k.retryAt) {
		return nil
	}
	if err := k.start(ctx, &sts); err != nil {
		k.retryAt = time.Now().Add(time.Second)
		return err
	}
	return nil
}

// finishTerminating deletes, with grace period 0, the pods being deleted: as the kubelet does
// once their containers stopped. (A pod bound to a Node is only marked for deletion until then.)
// The members here are stopped with their StatefulSet, or keep running for its replacement
// pods while it rolls.
func (k *Kubelet) finishTerminating(ctx context.Context) error {
	var pods corev1.PodList
	if err := k.env.Client.List(ctx, &pods, client.InNamespace(k.NS)); err != nil {
		return err
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.DeletionTimestamp == nil || p.Spec.NodeName == "" {
			continue
		}
		if err := k.env.Client.Delete(ctx, p, client.GracePeriodSeconds(0),
			client.Preconditions{UID: &p.UID}); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return fmt.Errorf("delete terminating pod %s: %w", p.Name, err)
		}
	}
	return nil
}

// removeVolumesOfDeletedClaims deletes the host dir of every PVC that no longer exists.
func (k *Kubelet) removeVolumesOfDeletedClaims(ctx context.Context) error {
	var pvcs corev1.PersistentVolumeClaimList
	if err := k.env.Client.List(ctx, &pvcs, client.InNamespace(k.NS)); err != nil {
		return err
	}
	keep := map[string]bool{}
	for _, p := range pvcs.Items {
		keep[string(p.UID)] = true
	}
	dirs, _ := os.ReadDir(filepath.Join(k.dir, "volumes"))
	for _, d := range dirs {
		if !keep[d.Name()] {
			if err := os.RemoveAll(filepath.Join(k.dir, "volumes", d.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// start creates the PVCs and pods of sts, runs their init containers and starts the members.
func (k *Kubelet) start(ctx context.Context, sts *appsv1.StatefulSet) error {
	members, err := k.members(ctx, sts)
	if err != nil || members == nil {
		return err
	}
	if err := k.initMembers(ctx, members); err != nil {
		return err // the kubelet retries the pods' init containers
	}
	etcds, err := k.startMembers(sts, members)
	if err != nil {
		return err
	}
	k.mu.Lock()
	k.etcds, k.running = etcds, sts.UID
	k.mu.Unlock()
	for _, m := range members {
		if err := k.reportReady(ctx, m.pod); err != nil {
			return err
		}
	}
	return nil
}

// kubeletMember is one member pod the kubelet runs, with its volume's directory.
type kubeletMember struct {
	pod    *corev1.Pod
	volume string
}

// members returns sts's member pods, bound to the node, with their volumes; nil until the
// StatefulSet controller has created every PVC and pod.
func (k *Kubelet) members(ctx context.Context, sts *appsv1.StatefulSet) ([]kubeletMember, error) {
	n := int(*sts.Spec.Replicas)
	members := make([]kubeletMember, n)
	for i := range n {
		podName := fmt.Sprintf("%s-%d", sts.Name, i)
		var pvc corev1.PersistentVolumeClaim
		err := k.env.Client.Get(ctx, types.NamespacedName{Namespace: k.NS,
			Name: sts.Spec.VolumeClaimTemplates[0].Name + "-" + podName}, &pvc)
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		pod := &corev1.Pod{}
		err = k.env.Client.Get(ctx, types.NamespacedName{Namespace: k.NS, Name: podName}, pod)
		if apierrors.IsNotFound(err) || err == nil && (!metav1.IsControlledBy(pod, sts) || pod.DeletionTimestamp != nil) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		if err := k.env.bind(ctx, pod); err != nil {
			return nil, err
		}
		members[i] = kubeletMember{pod: pod, volume: filepath.Join(k.dir, "volumes", string(pvc.UID))}
		if err := os.MkdirAll(members[i].volume, 0o700); err != nil {
			return nil, err
		}
	}
	return members, nil
}

// initMembers runs the members' init containers, in parallel as with podManagementPolicy
// Parallel, and reports each that failed in its pod's status.
func (k *Kubelet) initMembers(ctx context.Context, members []kubeletMember) error {
	errs := make([]error, len(members))
	var wg sync.WaitGroup
	for i, m := range members {
		for _, ic := range m.pod.Spec.InitContainers {
			wg.Go(func() { errs[i] = k.runInit(ctx, m.pod, ic, m.volume) })
		}
	}
	wg.Wait()
	err := errors.Join(errs...)
	if err == nil {
		return nil
	}
	for i, m := range members {
		var ie *initError
		if errors.As(errs[i], &ie) {
			if rerr := k.reportInitFailure(ctx, m.pod, ie); rerr != nil {
				return errors.Join(err, rerr)
			}
		}
	}
	return err
}

// startMembers starts the members' etcd together (each waits for a quorum) on their data dirs.
func (k *Kubelet) startMembers(sts *appsv1.StatefulSet, members []kubeletMember) ([]*etcdtest.Etcd, error) {
	var initial []string
	for i := range members {
		initial = append(initial, fmt.Sprintf("%s-%d=%s", sts.Name, i, k.peer[i].String()))
	}
	etcds := make([]*etcdtest.Etcd, len(members))
	errs := make([]error, len(members))
	var wg sync.WaitGroup
	for i, m := range members {
		dataDir, err := k.hostPath(m.pod.Spec.Containers[0], m.pod, argValue(m.pod.Spec.Containers[0].Args, "--data-dir"),
			m.volume)
		if err != nil {
			return nil, err
		}
		wg.Go(func() {
			etcds[i], errs[i] = etcdtest.StartIn(dataDir, m.pod.Name, func(c *embed.Config) {
				c.ListenClientUrls, c.AdvertiseClientUrls = []url.URL{k.client[i]}, []url.URL{k.client[i]}
				c.ListenPeerUrls, c.AdvertisePeerUrls = []url.URL{k.peer[i]}, []url.URL{k.peer[i]}
				c.InitialCluster = strings.Join(initial, ",")
				c.InitialClusterToken = k.Cluster
			})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, e := range etcds {
			if e != nil {
				e.Stop()
			}
		}
		return nil, err
	}
	return etcds, nil
}

// reportPodsReady reports every pod of the running StatefulSet ready that is not yet.
func (k *Kubelet) reportPodsReady(ctx context.Context, sts *appsv1.StatefulSet) error {
	var pods corev1.PodList
	if err := k.env.Client.List(ctx, &pods, client.InNamespace(k.NS),
		client.MatchingLabels(sts.Spec.Selector.MatchLabels)); err != nil {
		return err
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if !metav1.IsControlledBy(p, sts) || p.DeletionTimestamp != nil || podReady(p) {
			continue
		}
		if err := k.reportReady(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue && p.Status.Phase == corev1.PodRunning
		}
	}
	return false
}

// runInit runs one init container of pod: the restore step is the only one this kubelet knows.
func (k *Kubelet) runInit(ctx context.Context, pod *corev1.Pod, c corev1.Container, volume string) error {
	if filepath.Base(c.Command[0]) != RestoreStep {
		return fmt.Errorf("init container %s runs %s: this kubelet runs only %s", c.Name, c.Command[0], RestoreStep)
	}
	env, args, err := k.containerEnv(ctx, pod, c, volume)
	if err != nil {
		return err
	}
	var cluster kubermaticv1.Cluster
	if err := k.env.Client.Get(ctx, types.NamespacedName{Name: k.Cluster}, &cluster); err != nil {
		return err
	}
	if err := k.reportInitRunning(ctx, pod, c); err != nil {
		return err
	}
	var out *liveLog
	if k.env.node != nil {
		out = k.env.node.log(pod.Namespace, pod.Name, c.Name)
	} else {
		out = &liveLog{}
	}
	cmd := exec.CommandContext(ctx, filepath.Join(k.env.Opts.ServiceDir, RestoreStep), args...)
	cmd.Env, cmd.Stdout, cmd.Stderr = env, out, out
	out.onLine = func(line []byte) {
		if !bytes.Contains(line, []byte(`"bytes_done"`)) || cmd.Process == nil {
			return
		}
		k.mu.Lock()
		defer k.mu.Unlock()
		if k.hold && cmd.Process.Signal(syscall.SIGSTOP) == nil {
			k.held = append(k.held, cmd.Process)
		}
	}
	runErr := cmd.Run()
	run := StepRun{Pod: pod.Name, ClusterPaused: cluster.Spec.Pause, Log: out.String()}
	if cmd.ProcessState != nil {
		run.ExitCode = cmd.ProcessState.ExitCode()
	}
	k.mu.Lock()
	k.steps = append(k.steps, run)
	k.mu.Unlock()
	if runErr != nil {
		return &initError{container: c.Name, pod: pod.Name, code: run.ExitCode, log: run.Log}
	}
	return nil
}

// containerEnv is what a container of pod runs with: its environment, with the Secrets' keys
// it references, and its arguments, with paths in its volume mapped to the host's.
func (k *Kubelet) containerEnv(ctx context.Context, pod *corev1.Pod, c corev1.Container,
	volume string) (env, args []string, err error) {
	env = []string{"POD_NAME=" + pod.Name, "PATH=" + os.Getenv("PATH")}
	for _, e := range c.Env {
		if ref := e.ValueFrom; ref != nil && ref.SecretKeyRef != nil {
			var s corev1.Secret
			if err := k.env.Client.Get(ctx, types.NamespacedName{Namespace: pod.Namespace, Name: ref.SecretKeyRef.Name},
				&s); err != nil {
				return nil, nil, fmt.Errorf("init container %s: secret %s: %w", c.Name, ref.SecretKeyRef.Name, err)
			}
			env = append(env, e.Name+"="+string(s.Data[ref.SecretKeyRef.Key]))
		}
	}
	for _, a := range c.Args {
		name, value, ok := strings.Cut(a, "=")
		if ok && (name == "--data-dir" || name == "--work-dir") {
			p, err := k.hostPath(c, pod, value, volume)
			if err != nil {
				return nil, nil, err
			}
			a = name + "=" + p
		}
		args = append(args, expand(a, pod))
	}
	return env, args, nil
}

// HoldSteps makes every restore step from now on stop (SIGSTOP) right after it logs its
// download progress, the way a slow download would hold it, until ReleaseSteps.
func (k *Kubelet) HoldSteps() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.hold = true
}

// Held returns how many restore steps are stopped by HoldSteps.
func (k *Kubelet) Held() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.held)
}

// ReleaseSteps continues the held restore steps and holds no more.
func (k *Kubelet) ReleaseSteps() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.hold = false
	for _, p := range k.held {
		_ = p.Signal(syscall.SIGCONT)
	}
	k.held = nil
}

// reportInitRunning reports init container c of pod running, as the kubelet does while it runs.
func (k *Kubelet) reportInitRunning(ctx context.Context, pod *corev1.Pod, c corev1.Container) error {
	var current corev1.Pod
	if err := k.env.Client.Get(ctx, client.ObjectKeyFromObject(pod), &current); err != nil {
		return err
	}
	k.mu.Lock()
	restarts := k.restarts[pod.UID]
	k.mu.Unlock()
	current.Status.Phase = corev1.PodPending
	current.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: c.Name, Image: c.Image, RestartCount: restarts,
		State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}}}}
	return k.env.Client.Status().Update(ctx, &current)
}

// initError is an init container that exited non-zero.
type initError struct {
	container, pod, log string
	code                int
}

func (e *initError) Error() string {
	return fmt.Sprintf("init container %s of %s exited %d: %s", e.container, e.pod, e.code, e.log)
}

// reportInitFailure reports a failed init container in the pod's status as the kubelet does:
// terminated with its exit code, the tail of its log as the message (FallbackToLogsOnError),
// and the restart count.
func (k *Kubelet) reportInitFailure(ctx context.Context, pod *corev1.Pod, ie *initError) error {
	k.mu.Lock()
	if k.restarts == nil {
		k.restarts = map[types.UID]int32{}
	}
	restarts := k.restarts[pod.UID]
	k.restarts[pod.UID]++
	k.mu.Unlock()
	msg := strings.TrimSpace(ie.log)
	if len(msg) > 2048 {
		msg = msg[len(msg)-2048:]
	}
	var current corev1.Pod
	if err := k.env.Client.Get(ctx, client.ObjectKeyFromObject(pod), &current); err != nil {
		return err
	}
	current.Status.Phase = corev1.PodPending
	current.Status.InitContainerStatuses = []corev1.ContainerStatus{{
		Name: ie.container, Image: pod.Spec.InitContainers[0].Image, RestartCount: restarts,
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: int32(ie.code),
			Reason: "Error", Message: msg}},
	}}
	return k.env.Client.Status().Update(ctx, &current)
}

// hostPath maps a path inside container c of pod to the host dir of the volume mounted there.
func (k *Kubelet) hostPath(c corev1.Container, pod *corev1.Pod, p, volume string) (string, error) {
	p = expand(p, pod)
	for _, m := range c.VolumeMounts {
		if rest, ok := strings.CutPrefix(p, m.MountPath); ok {
			return filepath.Join(volume, rest), nil
		}
	}
	return "", fmt.Errorf("path %s of container %s is on no mounted volume", p, c.Name)
}

var varRef = regexp.MustCompile(`\$\(([A-Z_]+)\)`)

// expand replaces $(POD_NAME) and $(NAMESPACE) as the kubelet does for env-backed references.
func expand(s string, pod *corev1.Pod) string {
	return varRef.ReplaceAllStringFunc(s, func(ref string) string {
		switch ref {
		case "$(POD_NAME)":
			return pod.Name
		case "$(NAMESPACE)", "$(POD_NAMESPACE)":
			return pod.Namespace
		}
		return ref
	})
}

func argValue(args []string, flag string) string {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v
		}
	}
	return ""
}

func (k *Kubelet) reportReady(ctx context.Context, pod *corev1.Pod) error {
	now := metav1.Now()
	pod.Status = corev1.PodStatus{
		Phase:      corev1.PodRunning,
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now}},
		StartTime:  &now,
	}
	for _, c := range pod.Spec.InitContainers {
		pod.Status.InitContainerStatuses = append(pod.Status.InitContainerStatuses, corev1.ContainerStatus{Name: c.Name,
			Image: c.Image,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed"}}})
	}
	for _, c := range pod.Spec.Containers {
		pod.Status.ContainerStatuses = append(pod.Status.ContainerStatuses, corev1.ContainerStatus{Name: c.Name,
			Image: c.Image, Ready: true,
			Started: ptr.To(true), State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}})
	}
	return k.env.Client.Status().Update(ctx, pod)
}

func freeURL() (url.URL, error) {
	port, err := FreePort()
	if err != nil {
		return url.URL{}, err
	}
	return url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", port)}, nil
}

func unstructuredOf(obj map[string]any) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: obj}
}
