package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/nats-io/nats.go/jetstream"
)

// TypedHandler handles one decoded, valid message. It returns nil when its work is done, or
// an error that says what became of it: Permanent (or one its stage's Classes mark permanent)
// when retrying cannot help, anything else to have the message delivered again. It does
// nothing else with the error: reporting it is the middleware's job (Report), logging it the
// Worker's. It must be idempotent: JetStream delivers at least once.
type TypedHandler[M any] func(ctx context.Context, m M, d Delivery) error

// Middleware wraps a TypedHandler with what every handler of a kind does around its work
// (watermill's HandlerMiddleware is the model).
type Middleware[M any] func(TypedHandler[M]) TypedHandler[M]

// Class is one row of a stage's table of errors: an error that matches it (errors.Is Err, or
// Match) is counted with its reason and, when Permanent, never retried.
type Class struct {
	Err   error
	Match func(error) bool
	// Reason is the label of etcdbackup_failures_total; ReasonOf, when set, derives it from
	// the error instead (a configuration error's own reason).
	Reason    string
	ReasonOf  func(error) string
	Permanent bool
}

// Classes is a stage's table of errors, looked up in order; Else is the reason of an error
// no row matches (it stays transient unless it was marked Permanent where it arose).
type Classes struct {
	Rows []Class
	Else string
}

// Classify returns err's reason and err itself, marked Permanent when its row is.
func (c Classes) Classify(err error) (string, error) {
	if err == nil {
		return "", nil
	}
	for _, row := range c.Rows {
		if (row.Err != nil && errors.Is(err, row.Err)) || (row.Match != nil && row.Match(err)) {
			reason := row.Reason
			if row.ReasonOf != nil {
				reason = row.ReasonOf(err)
			}
			if row.Permanent && !IsPermanent(err) {
				err = Permanent(err)
			}
			return reason, err
		}
	}
	return c.Else, err
}

// Classify marks the handler's errors permanent as c's rows say, for a handler that has no
// one to tell of its failures (Report classifies by itself).
func Classify[M any](c Classes) Middleware[M] {
	return func(next TypedHandler[M]) TypedHandler[M] {
		return func(ctx context.Context, m M, d Delivery) error {
			_, err := c.Classify(next(ctx, m, d))
			return err
		}
	}
}

// Outcome is how a stage tells of its work's failures: the status event the people waiting
// on a backup read, and the failure counter. Report applies it.
type Outcome[M any] struct {
	// Stage labels etcdbackup_failures_total{stage} ("snapshot", "upload", "delete").
	Stage string
	// Classes sorts the handler's errors into reasons and permanence.
	Classes Classes
	// Attempts, when set, is how many deliveries try the work: a transient error on the last
	// of them is permanent. The consumer's MaxDeliver keeps deliveries beyond it for reporting
	// the failure when NATS is briefly away.
	Attempts uint64
	// Window, when set, says since when m's work has been waiting and until when it is
	// retried: a transient error at or after until is permanent (given up, Failed), and each
	// retry's message says how long it has waited. Zero until: no bound but the consumer's.
	Window func(m M) (since, until time.Time)
	// Event returns the status event of m's work in phase with message.
	Event func(m M, phase etcdbackupv1.Phase, message string) *etcdbackupv1.StatusEvent
	// Retrying words a failed attempt that will be retried ("upload failed, retrying: ...").
	Retrying func(d Delivery, err error) string
	// Failed words the work failed for good ("upload: ...").
	Failed func(err error) string
	// Rejections reports a rejected message's work as failed too (it names a backup of the
	// config, only not as the config says); without it, only the Event on the config and the
	// rejection counter tell of it.
	Rejections bool
	// Cleanup, when set, runs after a failure for good was reported (the uploader drops the
	// staged copy).
	Cleanup func(ctx context.Context, m M)
	// Attrs are the log attributes of m (the backup, its cluster and job): the Worker's one
	// line about a retry or a termination carries them.
	Attrs func(m M) []any
}

// Report is the one epilogue of every stage that works on a backup: it classifies the
// handler's error, counts it in etcdbackup_failures_total{stage,reason}, and tells the
// people waiting on the backup: a transient failure as a Running event saying it is retried
// (best effort), a permanent one, a rejection (with Rejections) or the last delivery's
// failure (a dead letter) as a Failed event. A Failed event must not be lost: when it cannot
// be published the message is delivered again, unless this was its last delivery. Work cut
// off by shutdown is neither counted nor reported: another replica takes it.
func Report[M any](js jetstream.JetStream, metrics *Metrics, o Outcome[M]) Middleware[M] {
	return func(next TypedHandler[M]) TypedHandler[M] {
		return func(ctx context.Context, m M, d Delivery) error {
			err := next(ctx, m, d)
			if err == nil || ctx.Err() != nil {
				return err
			}
			if o.Attrs != nil {
				err = withAttrs(err, o.Attrs(m))
			}
			if refused(err) {
				if !o.Rejections {
					return err
				}
				return o.fail(ctx, js, m, d, err, err)
			}
			reason, err := o.Classes.Classify(err)
			if !IsPermanent(err) && o.Attempts > 0 && d.Attempt >= o.Attempts {
				err = Permanent(err)
			}
			waited := ""
			if o.Window != nil && !IsPermanent(err) {
				since, until := o.Window(m)
				now := time.Now()
				switch {
				case !until.IsZero() && !now.Before(until):
					err = Permanent(fmt.Errorf("gave up after retrying for %s: %w", now.Sub(since).Round(time.Second), err))
				case !until.IsZero():
					waited = fmt.Sprintf(" (waiting %s since %s; retried until %s)", now.Sub(since).Round(time.Second),
						since.UTC().Format(time.RFC3339), until.UTC().Format(time.RFC3339))
				}
			}
			metrics.Failed(o.Stage, reason)
			switch {
			case IsPermanent(err):
				return o.fail(ctx, js, m, d, err, err)
			case d.Last:
				return o.fail(ctx, js, m, d, fmt.Errorf("gave up after the last allowed delivery: %w", err), err)
			}
			if o.Retrying != nil {
				// Best effort: the retry happens whether or not anyone hears of it.
				_ = PublishStatus(ctx, js, o.Event(m, etcdbackupv1.Phase_PHASE_RUNNING, o.Retrying(d, err)+waited))
			}
			return err
		}
	}
}

// fail publishes the Failed event about cause and returns err, or the publish's error (to be
// delivered again) unless d is the last delivery.
func (o Outcome[M]) fail(ctx context.Context, js jetstream.JetStream, m M, d Delivery, cause, err error) error {
	ev := o.Event(m, etcdbackupv1.Phase_PHASE_FAILED, o.Failed(cause))
	if perr := PublishStatus(ctx, js, ev); perr != nil && !d.Last {
		// The failure is told, not wrapped: the publish's error, which is transient, decides
		// that the message comes again.
		return fmt.Errorf("report the failure (%v): %w", err, perr) //nolint:errorlint // told, not wrapped (above)
	}
	if o.Cleanup != nil {
		o.Cleanup(ctx, m)
	}
	return err
}

// refused reports an invalid or rejected message.
func refused(err error) bool {
	var inv invalidError
	var rej *RejectError
	return errors.As(err, &inv) || errors.As(err, &rej)
}

// attrsError carries log attributes of the message whose handling failed to the Worker's
// one log line about it.
type attrsError struct {
	err   error
	attrs []any
}

func (e attrsError) Error() string { return e.err.Error() }
func (e attrsError) Unwrap() error { return e.err }

func withAttrs(err error, attrs []any) error {
	if err == nil || len(attrs) == 0 {
		return err
	}
	return attrsError{err: err, attrs: attrs}
}

// logger is log with the attributes err carries.
func logger(log *slog.Logger, err error) *slog.Logger {
	var a attrsError
	if errors.As(err, &a) {
		return log.With(a.attrs...)
	}
	return log
}
