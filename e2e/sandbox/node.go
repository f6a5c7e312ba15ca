package sandbox

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// NodeName is the one Node of the sandbox: the Kubelets bind the pods they run to it.
const NodeName = "sandbox"

// node is the kubelet's own server for that Node: the part of the kubelet API that
// kube-apiserver proxies `pods/log` to (GET /containerLogs/{namespace}/{pod}/{container}),
// so `kubectl logs` and the restorer read the restore step's log through the real API server.
// kube-apiserver runs without --kubelet-certificate-authority, so it accepts this server's
// self-signed certificate, as it would a kubelet's.
type node struct {
	srv  *httptest.Server
	mu   sync.Mutex
	logs map[string]*liveLog // namespace/pod/container -> the current run's output
}

// startNode registers Node NodeName with the address and port of a new log server.
func (e *Env) startNode(ctx context.Context) error {
	n := &node{logs: map[string]*liveLog{}}
	n.srv = httptest.NewUnstartedServer(http.HandlerFunc(n.serveLogs))
	n.srv.StartTLS()
	e.node = n
	_, port, err := net.SplitHostPort(n.srv.Listener.Addr().String())
	if err != nil {
		return err
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return err
	}
	obj := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: NodeName}}
	if err := e.Client.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create node: %w", err)
	}
	obj.Status = corev1.NodeStatus{
		Addresses:       []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: int32(p)}},
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue,
			Reason: "KubeletReady"}},
	}
	if err := e.Client.Status().Update(ctx, obj); err != nil {
		return fmt.Errorf("node status: %w", err)
	}
	return nil
}

func (n *node) stop() {
	if n != nil {
		n.srv.Close()
	}
}

// log starts a new run's log of a container, replacing the last run's as the kubelet does.
func (n *node) log(namespace, pod, container string) *liveLog {
	l := &liveLog{}
	n.mu.Lock()
	n.logs[namespace+"/"+pod+"/"+container] = l
	n.mu.Unlock()
	return l
}

// serveLogs answers the kubelet's containerLogs with tailLines and limitBytes.
func (n *node) serveLogs(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, "/containerLogs/")
	if !ok || r.Method != http.MethodGet {
		http.NotFound(w, r)
		return
	}
	n.mu.Lock()
	l := n.logs[rest]
	n.mu.Unlock()
	if l == nil {
		http.Error(w, "no log of container "+rest, http.StatusNotFound)
		return
	}
	out := l.Bytes()
	if v := r.URL.Query().Get("tailLines"); v != "" {
		if tail, err := strconv.Atoi(v); err == nil && tail >= 0 {
			lines := bytes.SplitAfter(out, []byte("\n"))
			if len(lines) > 0 && len(lines[len(lines)-1]) == 0 {
				lines = lines[:len(lines)-1]
			}
			out = bytes.Join(lines[max(0, len(lines)-tail):], nil)
		}
	}
	if v := r.URL.Query().Get("limitBytes"); v != "" {
		if limit, err := strconv.Atoi(v); err == nil && limit >= 0 && limit < len(out) {
			out = out[:limit]
		}
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write(out)
}

// liveLog is a container's output, readable while it runs. onLine, when set, sees each
// complete line as it is written.
type liveLog struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	seen   int
	onLine func(line []byte)
}

func (l *liveLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.buf.Write(p)
	var lines [][]byte
	for {
		i := bytes.IndexByte(l.buf.Bytes()[l.seen:], '\n')
		if i < 0 {
			break
		}
		lines = append(lines, bytes.Clone(l.buf.Bytes()[l.seen:l.seen+i]))
		l.seen += i + 1
	}
	onLine := l.onLine
	l.mu.Unlock()
	if onLine != nil {
		for _, line := range lines {
			onLine(line)
		}
	}
	return len(p), nil
}

// Bytes returns everything written so far.
func (l *liveLog) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.buf.Bytes())
}

func (l *liveLog) String() string { return string(l.Bytes()) }

// bind binds pod to the sandbox's Node, as the scheduler would, unless it is bound already.
func (e *Env) bind(ctx context.Context, pod *corev1.Pod) error {
	if pod.Spec.NodeName != "" {
		return nil
	}
	b := &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Name: pod.Name},
		Target: corev1.ObjectReference{Kind: "Node", Name: NodeName}}
	if err := e.Client.SubResource("binding").Create(ctx, pod, b); err != nil && !apierrors.IsConflict(err) {
		return fmt.Errorf("bind pod %s: %w", pod.Name, err)
	}
	return e.Client.Get(ctx, client.ObjectKeyFromObject(pod), pod)
}
