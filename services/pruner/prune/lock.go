package prune

import (
	"context"
	"errors"
	"fmt"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
)

// sweepLocked destroys, in each Object Lock destination of l, the versions of cfg's objects
// that no listing shows any more and whose retention has run out: a deletion there only hid
// the object behind a delete marker (the delete succeeds, the locked version stays), so that
// nothing, this pruner included, destroys a backup before its lock lets it. A version is never
// asked to go before Lock.Until its write (the store refuses it anyway); a delete marker goes
// once it hides nothing. It reports what it swept and what stays retained, per config.
func (p *Planner) sweepLocked(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig, l Listing) (int, error) {
	prefix := backupname.Prefix(cfg.Spec.Cluster.Name, cfg.Namespace, cfg.Name)
	swept, retained := 0, 0
	var newest time.Time
	locked := false
	for _, dest := range l.Destinations {
		if dest.Lock == nil {
			continue
		}
		b, err := p.Destinations.Bucket(ctx, dest)
		if err != nil {
			return swept, err
		}
		v, ok := b.(destination.Versions)
		if !ok {
			continue
		}
		locked = true
		s, r, n, err := sweep(ctx, v, prefix, p.now())
		swept, retained = swept+s, retained+r
		if n.After(newest) {
			newest = n
		}
		if err != nil {
			return swept, fmt.Errorf("sweep retained versions in destination %q: %w", dest.Name, err)
		}
	}
	if locked {
		p.Metrics.locked(cfg.Namespace, cfg.Name, retained, newest)
	}
	return swept, nil
}

// sweep destroys the versions under prefix in v that are no key's latest and whose retention
// ran out by now, and the delete markers that then hide nothing. It returns how many it
// destroyed, how many versions stay retained, and until when the newest live object is locked.
func sweep(ctx context.Context, v destination.Versions, prefix string, now time.Time) (swept, retained int,
	newest time.Time, err error) {
	lock := v.Lock()
	byKey := map[string][]destination.Version{}
	var keys []string
	err = v.ListVersions(ctx, prefix, func(ver destination.Version) error {
		if _, seen := byKey[ver.Key]; !seen {
			keys = append(keys, ver.Key)
		}
		byKey[ver.Key] = append(byKey[ver.Key], ver)
		return nil
	})
	if err != nil {
		return 0, 0, time.Time{}, err
	}
	for _, key := range keys {
		left := 0
		var markers []destination.Version
		for _, ver := range byKey[key] {
			switch {
			case ver.DeleteMarker:
				markers = append(markers, ver)
			case ver.Latest:
				left++
				if until := lock.Until(ver.LastModified); until.After(newest) {
					newest = until
				}
			case lock.Until(ver.LastModified).After(now):
				left++
				retained++
			default:
				switch err := v.DeleteVersion(ctx, key, ver.VersionID); {
				case errors.Is(err, destination.ErrLocked): // retained longer than this destination's lock says
					left++
					retained++
				case err != nil:
					return swept, retained, newest, err
				default:
					swept++
				}
			}
		}
		if left > 0 {
			continue
		}
		for _, m := range markers {
			if err := v.DeleteVersion(ctx, key, m.VersionID); err != nil {
				return swept, retained, newest, err
			}
			swept++
		}
	}
	return swept, retained, newest, nil
}
