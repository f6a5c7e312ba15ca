package bus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
)

// Delivery is what a typed handler learns of the message besides its body.
type Delivery struct {
	// Subject is the subject the message was published on; on the status stream it names the
	// stage that published it (only that stage's identity may publish there).
	Subject string
	// Attempt counts deliveries of this message, from 1.
	Attempt uint64
	// Last is set on the last delivery the consumer makes: a transient error now makes the
	// message a dead letter.
	Last bool
}

// Message is a pointer to a protobuf message type T of the bus.
type Message[T any] interface {
	*T
	proto.Message
}

// Typed adapts a handler of one message type to a Handler: it decodes the body (protobuf or
// protojson), validates it (Validate), and terminates an invalid message at once, counted in
// etcdbackup_invalid_messages_total and logged once by the Worker. The valid ones go through
// mw, outermost first, to h. On the message's last delivery (maxDeliver, the consumer's
// MaxDeliver) a transient error makes it a dead letter: terminated, counted in
// etcdbackup_dead_letters_total (Report has told the people waiting on it).
func Typed[T any, M Message[T]](maxDeliver int, h TypedHandler[M], mw ...Middleware[M]) Handler {
	for i := len(mw) - 1; i >= 0; i-- {
		h = mw[i](h)
	}
	return func(ctx context.Context, msg jetstream.Msg) error {
		m, d, err := decodeTyped[T, M](msg, maxDeliver)
		if err != nil {
			return err
		}
		return lastDelivery(ctx, d, h(ctx, m, d))
	}
}

// decodeTyped decodes and validates msg's body as an M, with its delivery.
func decodeTyped[T any, M Message[T]](msg jetstream.Msg, maxDeliver int) (M, Delivery, error) {
	m := M(new(T))
	if err := Decode(msg.Data(), msg.Headers().Get(HeaderContentType), m); err != nil {
		return nil, Delivery{}, Invalid(err)
	}
	if err := Validate(m); err != nil {
		return nil, Delivery{}, Invalid(fmt.Errorf("%s: %w", m.ProtoReflect().Descriptor().Name(), err))
	}
	d := Delivery{Subject: msg.Subject(), Attempt: 1}
	if md, err := msg.Metadata(); err == nil {
		d.Attempt = md.NumDelivered
	}
	d.Last = maxDeliver > 0 && d.Attempt >= uint64(maxDeliver)
	return m, d, nil
}

// lastDelivery turns a transient error on a message's last delivery into a dead letter.
func lastDelivery(ctx context.Context, d Delivery, err error) error {
	if err == nil || IsPermanent(err) || !d.Last || ctx.Err() != nil {
		return err
	}
	return Permanent(deadLetterError{err})
}

type invalidError struct{ err error }

func (e invalidError) Error() string { return "invalid message: " + e.err.Error() }
func (e invalidError) Unwrap() error { return e.err }

// Invalid marks err as a message that cannot be read or fails validation: terminated, counted,
// never retried.
func Invalid(err error) error { return Permanent(invalidError{err}) }

// RejectError is a message refused because what it claims disagrees with the Kubernetes API
// (another object key, destination or cluster than the config's, a stage publishing what only
// another may). Reason is a short, stable label for the metric.
type RejectError struct {
	Reason string
	Err    error
}

func (e *RejectError) Error() string { return "rejected (" + e.Reason + "): " + e.Err.Error() }
func (e *RejectError) Unwrap() error { return e.Err }

// Reject marks a message as refused for reason: terminated, counted in
// etcdbackup_rejected_messages_total{subject,reason}, never retried.
func Reject(reason string, err error) error { return Permanent(&RejectError{Reason: reason, Err: err}) }

// RetrySoon marks a transient error whose message should come again after d, not after the
// worker's backoff: a wait that is over in moments (the status writer waiting for the
// scheduler's event of a backup, which another replica is applying).
func RetrySoon(d time.Duration, err error) error { return &retrySoonError{after: d, err: err} }

type retrySoonError struct {
	after time.Duration
	err   error
}

func (e *retrySoonError) Error() string { return e.err.Error() }
func (e *retrySoonError) Unwrap() error { return e.err }

type deadLetterError struct{ err error }

func (e deadLetterError) Error() string { return "dead letter, last error: " + e.err.Error() }
func (e deadLetterError) Unwrap() error { return e.err }

// Metrics counts what the bus layer refused, retried or gave up on, and the failures Report
// counts for every stage. Build it once per process and give it to every Worker (WithMetrics).
type Metrics struct {
	invalid, rejected, dead, retried, failures *prometheus.CounterVec
}

// NewMetrics registers the bus metrics on r.
func NewMetrics(r prometheus.Registerer) *Metrics {
	m := &Metrics{
		invalid: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etcdbackup_invalid_messages_total",
			Help: "Messages terminated because they could not be decoded or failed validation, by subject.",
		}, []string{"subject"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etcdbackup_rejected_messages_total",
			Help: "Messages terminated because what they claim disagrees with the Kubernetes API, by subject and reason.",
		}, []string{"subject", "reason"}),
		dead: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etcdbackup_dead_letters_total",
			Help: "Messages that failed on their last allowed delivery (the consumer's MaxDeliver), by subject.",
		}, []string{"subject"}),
		retried: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etcdbackup_redeliveries_total",
			Help: "Messages handed back for another delivery after a failed attempt (a transient error), by subject.",
		}, []string{"subject"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etcdbackup_failures_total",
			Help: "Failed attempts, by stage (snapshot, upload, delete, restore) and reason.",
		}, []string{"stage", "reason"}),
	}
	r.MustRegister(m.invalid, m.rejected, m.dead, m.retried, m.failures)
	return m
}

// Failed counts a failed attempt of stage for reason.
func (m *Metrics) Failed(stage, reason string) {
	if m != nil {
		m.failures.WithLabelValues(stage, reason).Inc()
	}
}

// Failures is the counter of stage's failed attempts for reason (for tests and dashboards).
func (m *Metrics) Failures(stage, reason string) prometheus.Counter {
	return m.failures.WithLabelValues(stage, reason)
}

// retry counts a message handed back for another delivery.
func (m *Metrics) retry(subject string) {
	if m == nil {
		return
	}
	if strings.HasPrefix(subject, SubjectStatusPrefix+".") && StatusStage(subject) == "" {
		subject = SubjectStatusPrefix + ".*"
	}
	m.retried.WithLabelValues(subject).Inc()
}

// observe counts err, returning the kind of refusal for the log ("" for a plain failure).
func (m *Metrics) observe(subject string, err error) string {
	if strings.HasPrefix(subject, SubjectStatusPrefix+".") && StatusStage(subject) == "" {
		subject = SubjectStatusPrefix + ".*" // bounded labels, whatever was published
	}
	var inv invalidError
	var rej *RejectError
	var dead deadLetterError
	switch {
	case errors.As(err, &inv):
		if m != nil {
			m.invalid.WithLabelValues(subject).Inc()
		}
		return "invalid"
	case errors.As(err, &rej):
		if m != nil {
			m.rejected.WithLabelValues(subject, rej.Reason).Inc()
		}
		return "rejected"
	case errors.As(err, &dead):
		if m != nil {
			m.dead.WithLabelValues(subject).Inc()
		}
		return "dead letter"
	}
	return ""
}

// Invalid is the counter of invalid messages on subject (for tests and dashboards).
func (m *Metrics) Invalid(subject string) prometheus.Counter {
	return m.invalid.WithLabelValues(subject)
}

// Rejected is the counter of rejected messages on subject for reason.
func (m *Metrics) Rejected(subject, reason string) prometheus.Counter {
	return m.rejected.WithLabelValues(subject, reason)
}

// Redeliveries is the counter of messages on subject handed back for another delivery.
func (m *Metrics) Redeliveries(subject string) prometheus.Counter {
	return m.retried.WithLabelValues(subject)
}

// DeadLetters is the counter of dead letters on subject.
func (m *Metrics) DeadLetters(subject string) prometheus.Counter {
	return m.dead.WithLabelValues(subject)
}
