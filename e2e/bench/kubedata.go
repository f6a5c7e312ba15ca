package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
)

// kubeFill writes what kube-apiserver keeps in etcd until the database holds mib MiB: objects
// of mixed kinds and sizes in its storage encoding (protobuf, "k8s\x00"-prefixed
// runtime.Unknown), pods whose status is written again and again, leases renewed every few
// seconds (many revisions of one small key), and events attached to an etcd lease, as the
// events TTL is. History stays (kube-apiserver compacts every 5 minutes; a snapshot taken
// between compactions holds it). Deterministic but for uids: the same size and mix each run.
func kubeFill(b *testing.B, ctx context.Context, cli *clientv3.Client, endpoint string, mib int) int64 {
	b.Helper()
	enc := protobuf.NewSerializer(clientgoscheme.Scheme, clientgoscheme.Scheme)
	encode := func(obj runtime.Object) string {
		var buf bytes.Buffer
		if err := enc.Encode(obj, &buf); err != nil {
			b.Fatal(err)
		}
		return buf.String()
	}
	rng := mrand.New(mrand.NewPCG(1, 2))
	lease, err := cli.Grant(ctx, 3600)
	if err != nil {
		b.Fatal(err)
	}
	target := int64(mib) << 20
	for round := 0; ; round++ {
		ops := make([]clientv3.Op, 0, 64)
		for j := range 64 {
			ops = kubeObject(b, ctx, cli, rng, encode, lease.ID, round*64+j, ops)
		}
		if len(ops) > 0 {
			if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
				b.Fatal(err)
			}
		}
		if round%16 == 0 {
			st, err := cli.Status(ctx, endpoint)
			if err != nil {
				b.Fatal(err)
			}
			if st.DbSize >= target {
				return st.DbSize
			}
		}
	}
}

// kubeObject adds the writes of object i to ops (a pod's writes are committed at once, one
// revision each) and returns ops.
func kubeObject(b *testing.B, ctx context.Context, cli *clientv3.Client, rng *mrand.Rand,
	encode func(runtime.Object) string, lease clientv3.LeaseID, i int, ops []clientv3.Op) []clientv3.Op {
	b.Helper()
	ns := fmt.Sprintf("ns-%03d", i%120)
	switch k := i % 20; {
	case k < 7: // a pod, and its status written again 1-3 times
		pod := benchPod(rng, ns, i)
		key := fmt.Sprintf("/registry/pods/%s/%s", ns, pod.Name)
		for range 1 + rng.IntN(3) {
			pod.Status.Conditions[0].LastTransitionTime = metav1.NewTime(time.Unix(int64(1_700_000_000+i), 0))
			if _, err := cli.Put(ctx, key, encode(pod)); err != nil {
				b.Fatal(err)
			}
		}
	case k < 10:
		ops = append(ops, clientv3.OpPut(fmt.Sprintf("/registry/configmaps/%s/cm-%06d", ns, i),
			encode(benchConfigMap(rng, ns, i))))
	case k < 12:
		ops = append(ops, clientv3.OpPut(fmt.Sprintf("/registry/secrets/%s/secret-%06d", ns, i),
			encode(benchSecret(ns, i, 1<<10+rng.IntN(7<<10)))))
	case k < 17:
		ops = append(ops, clientv3.OpPut(fmt.Sprintf("/registry/events/%s/ev-%06d", ns, i),
			encode(benchEvent(rng, ns, i)), clientv3.WithLease(lease)))
	default: // a node lease renewed 10 times: revisions of one small key
		l := benchLease(i % 300)
		for r := range 10 {
			t := metav1.NewMicroTime(time.Unix(int64(1_700_000_000+i*10+r), 0))
			l.Spec.RenewTime = &t
			if _, err := cli.Put(ctx, "/registry/leases/kube-node-lease/"+l.Name, encode(l)); err != nil {
				b.Fatal(err)
			}
		}
	}
	return ops
}

func uid() types.UID {
	u := make([]byte, 16)
	_, _ = rand.Read(u)
	h := hex.EncodeToString(u)
	return types.UID(h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:])
}

// meta is an object's metadata as kube-apiserver stores it: labels, annotations and the
// managedFields server-side apply keeps (often the largest part of a small object).
func meta(rng *mrand.Rand, ns, name string, i int) metav1.ObjectMeta {
	fields := fmt.Sprintf(`{"f:metadata":{"f:labels":{"f:app":{},"f:pod-template-hash":{}}},"f:spec":{"f:containers":`+
		`{"k:{\"name\":\"app-%d\"}":{".":{},"f:image":{},"f:name":{},"f:resources":{}}}}}`, i%7)
	return metav1.ObjectMeta{
		Name: name, Namespace: ns, UID: uid(), ResourceVersion: fmt.Sprint(1000 + i),
		CreationTimestamp: metav1.NewTime(time.Unix(int64(1_690_000_000+i), 0)),
		Labels: map[string]string{"app": fmt.Sprintf("app-%d", i%40), "pod-template-hash": fmt.Sprintf("%x", i%997),
			"tier": []string{"frontend", "backend", "cache"}[i%3]},
		Annotations: map[string]string{"kubectl.kubernetes.io/restartedAt": "2026-11-30T10:00:00Z",
			"checksum/config": hex.EncodeToString([]byte(fmt.Sprintf("%032d", rng.IntN(1e9))))},
		ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kube-controller-manager", Operation: "Update",
			APIVersion: "v1", FieldsType: "FieldsV1", FieldsV1: metav1.NewFieldsV1(fields)}},
	}
}

func benchPod(rng *mrand.Rand, ns string, i int) *corev1.Pod {
	var containers []corev1.Container
	for c := range 1 + rng.IntN(3) {
		var env []corev1.EnvVar
		for e := range 5 + rng.IntN(30) {
			env = append(env, corev1.EnvVar{Name: fmt.Sprintf("SETTING_%d", e), Value: fmt.Sprintf("value-%d-%d", e, i%50)})
		}
		containers = append(containers, corev1.Container{Name: fmt.Sprintf("app-%d", c),
			Image: fmt.Sprintf("registry.example.com/team-%d/app:v1.%d.%d", i%12, i%30, c), Env: env,
			Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")}},
			VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: "/etc/app"}}})
	}
	return &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: meta(rng, ns, fmt.Sprintf("app-%06d-%x", i, i*7919%65536), i),
		Spec: corev1.PodSpec{Containers: containers, NodeName: fmt.Sprintf("node-%03d", i%300),
			Volumes: []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: fmt.Sprintf("cm-%06d", i)}}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: fmt.Sprintf("10.%d.%d.%d", i%250, i/250%250, i%200),
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
}

func benchConfigMap(rng *mrand.Rand, ns string, i int) *corev1.ConfigMap {
	data := map[string]string{}
	size := 512 + rng.IntN(24<<10)
	for k := 0; size > 0; k++ {
		var v bytes.Buffer
		for v.Len() < min(size, 4<<10) {
			fmt.Fprintf(&v, "key-%d.setting-%d = %d\n", k, v.Len(), rng.IntN(1000))
		}
		data[fmt.Sprintf("file-%d.conf", k)] = v.String()
		size -= v.Len()
	}
	return &corev1.ConfigMap{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: meta(rng, ns, fmt.Sprintf("cm-%06d", i), i), Data: data}
}

// benchSecret holds random bytes: certificates and tokens do not compress.
func benchSecret(ns string, i, size int) *corev1.Secret {
	v := make([]byte, size)
	_, _ = rand.Read(v)
	return &corev1.Secret{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("secret-%06d", i), Namespace: ns, UID: uid()},
		Type:       corev1.SecretTypeOpaque, Data: map[string][]byte{"tls.key": v}}
}

func benchEvent(rng *mrand.Rand, ns string, i int) *corev1.Event {
	return &corev1.Event{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Event"},
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ev-%06d.%x", i, rng.Uint32()), Namespace: ns, UID: uid()},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: fmt.Sprintf("app-%06d", i-i%20),
			UID: uid()},
		Reason: []string{"Scheduled", "Pulled", "Created", "Started", "BackOff"}[i%5], Type: corev1.EventTypeNormal,
		Message: fmt.Sprintf("Successfully assigned %s/app-%06d to node-%03d", ns, i, i%300), Count: int32(1 + i%9),
		Source: corev1.EventSource{Component: "kubelet", Host: fmt.Sprintf("node-%03d", i%300)}}
}

func benchLease(node int) *coordinationv1.Lease {
	holder, seconds := fmt.Sprintf("node-%03d", node), int32(40)
	return &coordinationv1.Lease{TypeMeta: metav1.TypeMeta{APIVersion: "coordination.k8s.io/v1", Kind: "Lease"},
		ObjectMeta: metav1.ObjectMeta{Name: holder, Namespace: "kube-node-lease"},
		Spec:       coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &seconds}}
}
