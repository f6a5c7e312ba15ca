package destination_test

import (
	"testing"

	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/destination/buckettest"
	"github.com/etcd-backup/etcdbackup/pkg/s3test"
)

// The Bucket contract on the in-process S3 server; e2e runs it on the end-to-end one.
func TestBucketContract(t *testing.T) {
	buckettest.Run(t, buckettest.Store{
		Bucket: func(t *testing.T) destination.Bucket {
			t.Helper()
			return s3test.Run(t, "backups").Bucket(t, "backups")
		},
		Missing: func(t *testing.T) destination.Bucket {
			t.Helper()
			return s3test.Run(t).Bucket(t, "backups")
		},
		Refused: func(t *testing.T) destination.Bucket {
			t.Helper()
			s := s3test.Run(t, "backups")
			s.Allow(s3test.AccessKey)
			return s.BucketWithKeys(t, "backups", "someone-else", "wrong")
		},
	})
}
