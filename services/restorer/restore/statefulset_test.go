package restore

import (
	"strings"
	"testing"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func etcdStatefulSet() *appsv1.StatefulSet {
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "etcd", Namespace: "cluster-x", UID: "old", ResourceVersion: "7",
			Annotations: map[string]string{"kept": "yes", AnnotationRestoreID: "earlier"}},
		Spec: appsv1.StatefulSetSpec{
			Replicas: ptr.To[int32](3),
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
				InitContainers: []corev1.Container{{Name: StepContainer, Image: "left-over"}, {Name: "other"}},
				Containers: []corev1.Container{{Name: "sidecar"}, {Name: "etcd", Image: "etcd",
					VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/var/run/etcd"}}}},
			}},
		},
	}
}

var opts = StepOptions{Image: "restorer", Command: "/restore-step", DataDir: "/var/run/etcd/pod_$(POD_NAME)",
	MaxSnapshotSize: 8 << 30,
	PeerURL:         "http://{pod}.{statefulset}.{namespace}.svc:2380"}

func TestRebuiltPutsTheStepInFrontOfEtcd(t *testing.T) {
	saved := Saveable(etcdStatefulSet())
	if saved.UID != "" || saved.ResourceVersion != "" || saved.Annotations[AnnotationRestoreID] != "" ||
		saved.Annotations["kept"] != "yes" {
		t.Fatalf("saved metadata %+v", saved.ObjectMeta)
	}
	if n := len(saved.Spec.Template.Spec.InitContainers); n != 1 {
		t.Fatalf("a left-over restore step was saved: %d init containers", n)
	}
	enc, err := Encode(saved)
	if err != nil {
		t.Fatal(err)
	}
	saved, err = Decode(enc)
	if err != nil {
		t.Fatal(err)
	}
	rs := &kubermaticv1.EtcdRestore{ObjectMeta: metav1.ObjectMeta{Name: "r", Namespace: "cluster-x", UID: "uid-1"}}
	cluster := &kubermaticv1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: "x"}}
	dest := destination.Destination{Name: "s3", Endpoint: "s3.example:9000", BucketName: "b"}
	sts, err := Rebuilt(saved, Step{Restore: rs, Cluster: cluster, Destination: dest,
		ObjectKey: "x/cluster-x/cfg/k.db.zst", SHA256: strings.Repeat("ab", 32), Secret: "creds"}, opts)
	if err != nil {
		t.Fatal(err)
	}
	if sts.Annotations[AnnotationRestoreID] != "uid-1" {
		t.Fatalf("restore id annotation %q", sts.Annotations[AnnotationRestoreID])
	}
	step := sts.Spec.Template.Spec.InitContainers[0]
	if step.Name != StepContainer || len(sts.Spec.Template.Spec.InitContainers) != 2 {
		t.Fatalf("init containers %+v", sts.Spec.Template.Spec.InitContainers)
	}
	args := strings.Join(step.Args, " ")
	for _, want := range []string{
		"--endpoint=http://s3.example:9000", "--bucket=b", "--key=x/cluster-x/cfg/k.db.zst",
		"--sha256=" + strings.Repeat("ab", 32), "--restore-id=uid-1",
		"--name=$(POD_NAME)", "--data-dir=/var/run/etcd/pod_$(POD_NAME)", "--work-dir=/var/run/etcd/.etcdbackup-restore",
		"--initial-cluster=etcd-0=http://etcd-0.etcd.cluster-x.svc:2380," +
			"etcd-1=http://etcd-1.etcd.cluster-x.svc:2380,etcd-2=http://etcd-2.etcd.cluster-x.svc:2380",
		"--initial-cluster-token=x", "--max-snapshot-size=8589934592",
	} {
		if !strings.Contains(args, want) {
			t.Errorf("args %q lack %q", args, want)
		}
	}
	if len(step.VolumeMounts) != 1 || step.VolumeMounts[0].MountPath != "/var/run/etcd" {
		t.Errorf("the step does not mount etcd's volumes: %+v", step.VolumeMounts)
	}
	for _, e := range step.Env {
		if e.Value != "" {
			t.Errorf("env %s carries a literal value; credentials must come from the secret", e.Name)
		}
		if (e.Name == kubermaticv1.SecretAccessKeyID || e.Name == kubermaticv1.SecretSecretAccessKey) &&
			e.ValueFrom.SecretKeyRef.Name != "creds" {
			t.Errorf("env %s from %+v", e.Name, e.ValueFrom)
		}
	}
}

func TestInitialClusterOverride(t *testing.T) {
	sts := etcdStatefulSet()
	cluster := &kubermaticv1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: "x", Annotations: map[string]string{
		kubermaticv1.AnnotationEtcdPeerURLs: "http://127.0.0.1:1, http://127.0.0.1:2,http://127.0.0.1:3"}}}
	got, err := InitialCluster(sts, cluster, opts)
	if err != nil || got != "etcd-0=http://127.0.0.1:1,etcd-1=http://127.0.0.1:2,etcd-2=http://127.0.0.1:3" {
		t.Fatalf("%q %v", got, err)
	}
	cluster.Annotations[kubermaticv1.AnnotationEtcdPeerURLs] = "http://127.0.0.1:1"
	if _, err := InitialCluster(sts, cluster, opts); err == nil {
		t.Fatal("one peer URL for three members was accepted")
	}
}

func TestConfigOf(t *testing.T) {
	for in, want := range map[string]string{
		"daily-backup-2021-03-02T15:24:00": "daily-backup",
		"x-2021-03-02T15:24:00":            "x",
		"daily-backup":                     "",
		"-2021-03-02T15:24:00":             "",
		"daily-backup-2021-13-02T15:24:00": "",
	} {
		got, ok := ConfigOf(in)
		if got != want || ok != (want != "") {
			t.Errorf("ConfigOf(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

func TestStepFailed(t *testing.T) {
	failed := func(restarts int32) *corev1.Pod {
		return &corev1.Pod{Status: corev1.PodStatus{InitContainerStatuses: []corev1.ContainerStatus{{
			Name: StepContainer, RestartCount: restarts,
			LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1,
				Message: "backup corrupt"}},
		}}}}
	}
	if _, ok := stepFailed(failed(1)); ok {
		t.Error("a first failure is retried by the kubelet, not final")
	}
	if msg, ok := stepFailed(failed(2)); !ok || msg != "backup corrupt" {
		t.Errorf("stepFailed = %q, %v", msg, ok)
	}
	ok := &corev1.Pod{Status: corev1.PodStatus{InitContainerStatuses: []corev1.ContainerStatus{{Name: StepContainer,
		RestartCount: 5,
		State:        corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0}}}}}}
	if _, failed := stepFailed(ok); failed {
		t.Error("a step that finished is not failed")
	}
}
