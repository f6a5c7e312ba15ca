package restore

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// Names the restorer gives what it creates.
const (
	// StepContainer is the init container that runs the restore step in each member pod.
	StepContainer = "etcdbackup-restore"
	// AnnotationRestoreID marks a StatefulSet rebuilt by a restore (value: the EtcdRestore uid).
	AnnotationRestoreID = "etcdbackup.k8c.io/restore-id"
	// SavedSpecKey is the key, in the saved-spec ConfigMap, of the StatefulSet as it was.
	SavedSpecKey = "statefulset.json"
	// EtcdLabel=EtcdLabelValue selects a cluster's etcd PVCs (KKP labels them app=etcd).
	EtcdLabel, EtcdLabelValue = "app", "etcd"
)

// ErrConfig marks a restore that cannot go on until a person fixes an object.
var ErrConfig = errors.New("restore configuration")

// SavedName is the name of the ConfigMap (in the cluster namespace) that keeps the
// StatefulSet's spec while it is rebuilt, and of the Secret with the download credentials.
func SavedName(restore *kubermaticv1.EtcdRestore) string { return "etcdbackup-restore-" + restore.Name }

// Saveable is sts as it should be recreated: name, labels, annotations and spec, without the
// restore step a previous restore may have left.
func Saveable(sts *appsv1.StatefulSet) *appsv1.StatefulSet {
	out := &appsv1.StatefulSet{
		TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "StatefulSet"},
		ObjectMeta: metav1.ObjectMeta{
			Name: sts.Name, Namespace: sts.Namespace,
			Labels: sts.Labels, Annotations: map[string]string{},
		},
		Spec: *sts.Spec.DeepCopy(),
	}
	for k, v := range sts.Annotations {
		if k != AnnotationRestoreID && k != corev1.LastAppliedConfigAnnotation {
			out.Annotations[k] = v
		}
	}
	inits := out.Spec.Template.Spec.InitContainers[:0]
	for _, c := range out.Spec.Template.Spec.InitContainers {
		if c.Name != StepContainer {
			inits = append(inits, c)
		}
	}
	out.Spec.Template.Spec.InitContainers = inits
	return out
}

// Encode and Decode the saved StatefulSet.
func Encode(sts *appsv1.StatefulSet) (string, error) {
	b, err := json.Marshal(sts)
	return string(b), err
}

// Decode is Encode's inverse.
func Decode(s string) (*appsv1.StatefulSet, error) {
	var sts appsv1.StatefulSet
	if err := json.Unmarshal([]byte(s), &sts); err != nil {
		return nil, fmt.Errorf("saved statefulset: %w", err)
	}
	return &sts, nil
}

// StepOptions shape the restore step in each member pod.
type StepOptions struct {
	// Image and Command run the restore-step program.
	Image   string
	Command string
	// DataDir is the member's data dir in the etcd container; $(POD_NAME) is the pod's name.
	DataDir string
	// PeerURL is each member's peer URL; {pod}, {statefulset} and {namespace} are replaced.
	PeerURL string
	// ProgressInterval is how often the step logs its download (0: the step's default).
	ProgressInterval time.Duration
	// MaxSnapshotSize bounds the snapshot the restorer verifies and the step writes to a
	// member's disk, whatever the object's metadata says (0: the step's default,
	// backupformat.DefaultMaxSnapshotSize).
	MaxSnapshotSize int64
}

// Step is the restore one rebuilt StatefulSet performs.
type Step struct {
	Restore     *kubermaticv1.EtcdRestore
	Cluster     *kubermaticv1.Cluster
	Destination destination.Destination
	ObjectKey   string
	// SHA256 is the digest of the object the restorer verified; the step refuses any other.
	SHA256 string
	// Secret holds the download's credentials: BACKUP_URL, a presigned GET of the backup, or
	// ACCESS_KEY_ID and SECRET_ACCESS_KEY (spec.backupDownloadCredentialsSecret's keys).
	Secret string
}

// InitialCluster lists every member of sts with its peer URL: the Cluster's peer-URL
// annotation when set (one per member), else opts.PeerURL.
func InitialCluster(sts *appsv1.StatefulSet, cluster *kubermaticv1.Cluster, opts StepOptions) (string, error) {
	n := 1
	if sts.Spec.Replicas != nil {
		n = int(*sts.Spec.Replicas)
	}
	var override []string
	if v := cluster.Annotations[kubermaticv1.AnnotationEtcdPeerURLs]; v != "" {
		for _, u := range strings.Split(v, ",") {
			if u = strings.TrimSpace(u); u != "" {
				override = append(override, u)
			}
		}
		if len(override) != n {
			return "", fmt.Errorf("%w: annotation %s on cluster %s lists %d peer URLs, the StatefulSet has %d replicas",
				ErrConfig, kubermaticv1.AnnotationEtcdPeerURLs, cluster.Name, len(override), n)
		}
	}
	members := make([]string, n)
	for i := range n {
		pod := fmt.Sprintf("%s-%d", sts.Name, i)
		u := strings.NewReplacer("{pod}", pod, "{statefulset}", sts.Name, "{namespace}", sts.Namespace).Replace(opts.PeerURL)
		if override != nil {
			u = override[i]
		}
		members[i] = pod + "=" + u
	}
	return strings.Join(members, ","), nil
}

// Rebuilt returns saved with the restore step in front of etcd in every member pod.
func Rebuilt(saved *appsv1.StatefulSet, step Step, opts StepOptions) (*appsv1.StatefulSet, error) {
	sts := saved.DeepCopy()
	sts.ResourceVersion, sts.UID = "", ""
	if sts.Annotations == nil {
		sts.Annotations = map[string]string{}
	}
	sts.Annotations[AnnotationRestoreID] = string(step.Restore.UID)
	pod := &sts.Spec.Template.Spec
	if len(pod.Containers) == 0 {
		return nil, fmt.Errorf("%w: statefulset %s/%s has no container", ErrConfig, sts.Namespace, sts.Name)
	}
	etcd := pod.Containers[0]
	for _, c := range pod.Containers {
		if c.Name == "etcd" {
			etcd = c
		}
	}
	initial, err := InitialCluster(sts, step.Cluster, opts)
	if err != nil {
		return nil, err
	}
	c := stepContainer(step, opts, initial)
	c.VolumeMounts, c.Resources, c.SecurityContext = etcd.VolumeMounts, etcd.Resources, etcd.SecurityContext
	pod.InitContainers = append([]corev1.Container{c}, pod.InitContainers...)
	return sts, nil
}

// stepContainer is the restore step of step, restoring the member into a cluster of initial:
// its arguments say what to restore and how, its environment carries the download
// credentials and identities from the restore's Secret.
func stepContainer(step Step, opts StepOptions, initial string) corev1.Container {
	scheme := "http://"
	if step.Destination.Secure {
		scheme = "https://"
	}
	fromSecret := func(key string, optional bool) corev1.EnvVar {
		ref := &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: step.Secret}, Key: key}
		if optional {
			ref.Optional = ptr.To(true)
		}
		return corev1.EnvVar{Name: key, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: ref}}
	}
	c := corev1.Container{
		Name:    StepContainer,
		Image:   opts.Image,
		Command: []string{opts.Command},
		Args: []string{
			"--endpoint=" + scheme + step.Destination.Endpoint,
			"--bucket=" + step.Destination.BucketName,
			"--key=" + step.ObjectKey,
			"--sha256=" + step.SHA256,
			"--restore-id=" + string(step.Restore.UID),
			"--name=$(POD_NAME)",
			"--data-dir=" + opts.DataDir,
			"--work-dir=" + path.Join(path.Dir(opts.DataDir), ".etcdbackup-restore"),
			"--initial-cluster=" + initial,
			"--initial-cluster-token=" + step.Cluster.Name,
		},
		Env: []corev1.EnvVar{
			{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{
				FieldPath: "metadata.name"}}},
			// A presigned URL of the backup, or the keys of spec.backupDownloadCredentialsSecret.
			fromSecret(URLEnv, true),
			fromSecret(kubermaticv1.SecretAccessKeyID, true),
			fromSecret(kubermaticv1.SecretSecretAccessKey, true),
			// The identities of an encrypted backup; absent for one that is not.
			fromSecret(IdentityEnv, true),
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
	if opts.ProgressInterval > 0 {
		c.Args = append(c.Args, "--progress-interval="+opts.ProgressInterval.String())
	}
	if opts.MaxSnapshotSize > 0 {
		c.Args = append(c.Args, fmt.Sprintf("--max-snapshot-size=%d", opts.MaxSnapshotSize))
	}
	return c
}
