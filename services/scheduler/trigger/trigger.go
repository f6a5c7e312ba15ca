// Package trigger serves the manual backup trigger: a core NATS request on
// etcdbackup.trigger.backup, answered by one scheduler replica (queue group "scheduler").
package trigger

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/bus"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/nats-io/nats.go"
)

// Manual queues a backup of a config now.
type Manual interface {
	Manual(ctx context.Context, namespace, name string, now time.Time) (*etcdbackupv1.BackupRequested, error)
}

// Server answers trigger requests.
type Server struct {
	nc     *nats.Conn
	manual Manual
	now    func() time.Time
	log    *slog.Logger
}

// New returns a Server over nc that queues through m.
func New(nc *nats.Conn, m Manual, now func() time.Time, log *slog.Logger) *Server {
	return &Server{nc: nc, manual: m, now: now, log: log}
}

// Start serves until ctx is done. A request in protojson gets a protojson reply, a binary one
// a binary reply; a request that queued nothing gets a reply with error set.
//
// Up to Concurrent requests are served at once: each reads and patches its config, and a
// thousand continuous journals that start together ask for a thousand full backups, which one
// at a time would answer in minutes. More wait in the subscription's queue.
func (s *Server) Start(ctx context.Context) error {
	slots := make(chan struct{}, Concurrent)
	var wg sync.WaitGroup
	sub, err := s.nc.QueueSubscribe(bus.SubjectTriggerBackup, bus.TriggerQueueGroup, func(m *nats.Msg) {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			s.serve(ctx, m)
		})
	})
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", bus.SubjectTriggerBackup, err)
	}
	<-ctx.Done()
	err = sub.Drain()
	wg.Wait()
	return err
}

// Concurrent is how many trigger requests a replica serves at once.
const Concurrent = 16

func (s *Server) serve(ctx context.Context, m *nats.Msg) {
	var req etcdbackupv1.TriggerBackupRequest
	contentType := m.Header.Get(bus.HeaderContentType)
	asJSON := bus.IsJSON(m.Data, contentType)
	reply := &etcdbackupv1.TriggerBackupReply{}
	if err := bus.Decode(m.Data, contentType, &req); err != nil {
		reply.Error = err.Error()
	} else if err := bus.Validate(&req); err != nil {
		reply.Error = "invalid request: " + err.Error()
	} else {
		reqCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		queued, err := s.manual.Manual(reqCtx, req.GetNamespace(), req.GetConfig(), s.now())
		cancel()
		if err != nil {
			reply.Error = err.Error()
		} else {
			reply.BackupName, reply.JobName = queued.GetBackupName(), queued.GetJobName()
		}
	}
	s.log.Info("manual trigger", "namespace", req.GetNamespace(), "config", req.GetConfig(), "backup",
		reply.GetBackupName(), "error", reply.GetError())
	data, ct, err := bus.Encode(reply, asJSON)
	if err != nil {
		s.log.Error("encode trigger reply", "err", err)
		return
	}
	out := nats.NewMsg(m.Reply)
	out.Data = data
	out.Header.Set(bus.HeaderContentType, ct)
	if err := m.RespondMsg(out); err != nil {
		s.log.Warn("reply to trigger", "err", err)
	}
}
