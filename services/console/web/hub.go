package web

import (
	"encoding/json"
	"sync"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/bus"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Event is a status event as the browser gets it (Server-Sent Events, event "status").
type Event struct {
	Namespace  string `json:"namespace"`
	Config     string `json:"config"`
	Cluster    string `json:"cluster"`
	BackupName string `json:"backupName,omitempty"`
	// Operation is backup, delete, restore or drill; Phase running, completed or failed.
	Operation string `json:"operation"`
	Stage     string `json:"stage"`
	Phase     string `json:"phase"`
	Message   string `json:"message,omitempty"`
	// BytesDone of BytesTotal: the progress of a running snapshot or upload.
	BytesDone  uint64 `json:"bytesDone,omitempty"`
	BytesTotal uint64 `json:"bytesTotal,omitempty"`
	// Time is when the stage published it (RFC 3339, ms).
	Time string `json:"time,omitempty"`
}

// EventOf turns a status event into what the browser gets; ok is false for one that names
// no valid namespace, which no one is sent.
func EventOf(ev *etcdbackupv1.StatusEvent) (Event, bool) {
	ns := ev.GetConfig().GetNamespace()
	if len(validation.IsDNS1123Label(ns)) > 0 {
		return Event{}, false
	}
	out := Event{
		Namespace: ns, Config: ev.GetConfig().GetName(), Cluster: ev.GetCluster(), BackupName: ev.GetBackupName(),
		Operation: enumWord(ev.GetOperation().String(), "OPERATION_"), Stage: enumWord(ev.GetStage().String(), "STAGE_"),
		Phase: enumWord(ev.GetPhase().String(), "PHASE_"), Message: ev.GetMessage(),
		BytesDone: ev.GetBytesDone(), BytesTotal: ev.GetBytesTotal(),
	}
	if out.Operation == "unspecified" {
		out.Operation = "backup"
	}
	if t := ev.GetTime(); t != nil {
		out.Time = t.AsTime().UTC().Format("2006-01-02T15:04:05.000Z07:00")
	}
	return out, true
}

// Hub holds the console's one subscription to the status events and hands each event to
// the browsers watching its namespace. A browser that cannot keep up loses events (its page
// reloads its data on the next one it gets); nothing on NATS depends on how many are open.
type Hub struct {
	// Buffer is how many events wait for one browser before more are dropped.
	Buffer int

	// connected is the number of browsers; dropped counts the events not passed to one.
	connected prometheus.Gauge
	dropped   *prometheus.CounterVec

	mu      sync.Mutex
	clients map[*Client]struct{}
	// recent are the events of the last RecentFor (at most RecentEvents), oldest first: a
	// browser that joins is handed those since its page was rendered (JoinSince).
	recent []recentEvent
}

// recentEvent is one event the hub passed on, with when.
type recentEvent struct {
	namespace string
	at        time.Time
	data      []byte
}

// RecentFor and RecentEvents bound the events a Hub keeps for browsers still connecting: a
// page's stream opens a moment after the page was rendered, and events in between (a quick
// backup's end) would otherwise never reach it.
const (
	RecentFor    = 2 * time.Minute
	RecentEvents = 4096
)

// Client is one browser's stream, for one namespace.
type Client struct {
	Namespace string
	C         chan []byte
}

// Reasons an event is not passed to a browser (etcdbackup_console_events_dropped_total).
const (
	DropSlowClient  = "slow-client"
	DropUndecodable = "undecodable"
	DropWrongStage  = "wrong-stage"
	DropInvalid     = "invalid"
)

// NewHub returns a Hub with room for buffer events per browser, whose metrics are registered
// on reg.
func NewHub(buffer int, reg prometheus.Registerer) *Hub {
	h := &Hub{
		Buffer: buffer, clients: map[*Client]struct{}{},
		connected: prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcdbackup_console_sse_clients",
			Help: "Browsers connected to the console's status event stream."}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etcdbackup_console_events_dropped_total",
			Help: "Status events not passed to a browser: slow-client (its buffer was full), undecodable, " +
				"wrong-stage (not from its stage's subject), invalid.",
		}, []string{"reason"}),
	}
	reg.MustRegister(h.connected, h.dropped)
	for _, r := range []string{DropSlowClient, DropUndecodable, DropWrongStage, DropInvalid} {
		h.dropped.WithLabelValues(r)
	}
	return h
}

// Subscribe subscribes to every status event on nc (the watcher identity may only read those).
func (h *Hub) Subscribe(nc *nats.Conn) (*nats.Subscription, error) {
	return nc.Subscribe(bus.SubjectStatusAll, func(m *nats.Msg) {
		var ev etcdbackupv1.StatusEvent
		if err := bus.Decode(m.Data, m.Header.Get(bus.HeaderContentType), &ev); err != nil {
			h.drop(DropUndecodable)
			return
		}
		// The status writer's own check: only what the stage may say.
		if bus.StatusFromItsStage(m.Subject, &ev) != nil {
			h.drop(DropWrongStage)
			return
		}
		h.Publish(&ev)
	})
}

// Publish hands ev to the browsers watching its namespace.
func (h *Hub) Publish(ev *etcdbackupv1.StatusEvent) {
	e, ok := EventOf(ev)
	if !ok {
		h.drop(DropInvalid)
		return
	}
	if e.Time == "" {
		e.Time = time.Now().UTC().Format("2006-01-02T15:04:05.000Z07:00")
	}
	data, err := json.Marshal(e)
	if err != nil {
		h.drop(DropInvalid)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	h.recent = append(h.recent, recentEvent{namespace: e.Namespace, at: now, data: data})
	old := 0
	for old < len(h.recent) && (len(h.recent)-old > RecentEvents || now.Sub(h.recent[old].at) > RecentFor) {
		old++
	}
	if old > 0 {
		h.recent = append(h.recent[:0], h.recent[old:]...)
	}
	for c := range h.clients {
		if c.Namespace != e.Namespace {
			continue
		}
		select {
		case c.C <- data:
		default:
			h.drop(DropSlowClient)
		}
	}
}

// Join adds a browser watching namespace; Leave removes it.
func (h *Hub) Join(namespace string) *Client { return h.JoinSince(namespace, time.Time{}) }

// JoinSince is Join, with the namespace's events the hub passed on from since (at most the
// last RecentFor) waiting first, in order: nothing between the page's render and its stream
// is lost, and nothing is given twice.
func (h *Hub) JoinSince(namespace string, since time.Time) *Client {
	c := &Client{Namespace: namespace, C: make(chan []byte, max(h.Buffer, 1))}
	h.mu.Lock()
	if !since.IsZero() {
		for _, e := range h.recent {
			if e.namespace != namespace || e.at.Before(since) {
				continue
			}
			select {
			case c.C <- e.data:
			default:
				h.drop(DropSlowClient)
			}
		}
	}
	h.clients[c] = struct{}{}
	n := len(h.clients)
	h.mu.Unlock()
	h.connected.Set(float64(n))
	return c
}

// Leave removes c.
func (h *Hub) Leave(c *Client) {
	h.mu.Lock()
	delete(h.clients, c)
	n := len(h.clients)
	h.mu.Unlock()
	h.connected.Set(float64(n))
}

// Clients is how many browsers are connected.
func (h *Hub) Clients() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.clients)
}

func (h *Hub) drop(reason string) { h.dropped.WithLabelValues(reason).Inc() }

func enumWord(s, prefix string) string {
	b := []byte(s)
	if len(s) > len(prefix) && s[:len(prefix)] == prefix {
		b = b[len(prefix):]
	}
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
