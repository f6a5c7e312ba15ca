package e2e

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/destination/buckettest"
)

// The Bucket contract on the end-to-end S3 server (versitygw), as pkg/destination runs it on
// the in-process one: both servers the services meet answer the same calls the same way.
func TestBucketContractOnTheS3Server(t *testing.T) {
	ctx := testContext(t, 5*time.Minute)
	var n atomic.Int32
	open := func(t *testing.T, name, secret string) destination.Bucket {
		t.Helper()
		b, err := destination.OpenS3(env.S3.Host, false, env.S3.AccessKey, secret, name)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	fresh := func(t *testing.T) string {
		t.Helper()
		name := fmt.Sprintf("contract-%d", n.Add(1))
		if err := env.S3.MakeBucket(ctx, name); err != nil {
			t.Fatal(err)
		}
		return name
	}
	buckettest.Run(t, buckettest.Store{
		Bucket: func(t *testing.T) destination.Bucket {
			t.Helper()
			return open(t, fresh(t), env.S3.SecretKey)
		},
		Missing: func(t *testing.T) destination.Bucket {
			t.Helper()
			return open(t, "contract-missing", env.S3.SecretKey)
		},
		Refused: func(t *testing.T) destination.Bucket {
			t.Helper()
			return open(t, fresh(t), "not-the-secret")
		},
		ChecksSignatures: true,
	})
}
