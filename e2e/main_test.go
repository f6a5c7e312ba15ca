// Package e2e runs the services as processes against real components: kube-apiserver with its
// etcd, NATS JetStream, the versitygw S3 server and a demo etcd (see package sandbox).
package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/etcd-backup/etcdbackup/e2e/sandbox"
)

var env *sandbox.Env

func TestMain(m *testing.M) { os.Exit(runTests(m)) }

func runTests(m *testing.M) int {
	flag.Parse()
	if spec := os.Getenv("ETCDBACKUP_E2E_SHARD"); spec != "" {
		run, err := shardRun(spec)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if err := flag.Set("test.run", run); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	tools := sandbox.ToolDir()
	if err := sandbox.CheckTools(tools); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	dir, err := os.MkdirTemp("", "etcdbackup-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	root, err := sandbox.RepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	// The services built by the caller (make test builds them once for every shard), else here.
	svcDir := os.Getenv("ETCDBACKUP_E2E_SERVICES")
	if svcDir == "" {
		svcDir = filepath.Join(dir, "bin")
		if err := sandbox.BuildServices(ctx, root, svcDir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	env, err = sandbox.Start(ctx, sandbox.Options{
		Dir:        dir,
		ToolDir:    tools,
		ServiceDir: svcDir,
		// Two schedulers and three pruners always run: tests check each slot is queued once
		// and each backup deleted once. Two restorers: one leads, one stands by.
		Replicas: map[string]int{"scheduler": 2, "pruner": 3, "restorer": 2},
		// The console renews Dex's ID tokens within a test (TestConsoleSignInThroughOIDC).
		OIDCTokenTTL: oidcTokenTTL,
		Args: map[string][]string{
			"scheduler":   {"--trigger-min-interval=2s"},
			"snapshotter": {"--max-attempts=2", "--retry-delay=200ms", "--member-timeout=1s"},
			"uploader":    {"--retry-delay=200ms", "--retry-max-delay=1s", "--part-size-mib=5"},
			"pruner":      {"--reconcile-interval=2s", "--retry-delay=200ms", "--retry-max-delay=1s"},
			"restorer":    {"--poll-interval=200ms"},
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start sandbox:", err)
		fmt.Fprintln(os.Stderr, "state and logs kept in", dir)
		return 1
	}
	code := m.Run()
	env.Close()
	if code == 0 {
		_ = os.RemoveAll(dir)
	} else {
		fmt.Fprintln(os.Stderr, "state and logs kept in", dir)
	}
	return code
}

// shardRun is the -test.run pattern of shard spec ("i/n", from 1): the package's tests, read
// from its files, dealt out to n shards by their weight, heaviest first, each to the lightest
// shard so far. Each shard runs in a sandbox of its own, so make test runs them side by side.
// A test given -run as well is refused: the two patterns cannot be combined.
func shardRun(spec string) (string, error) {
	if f := flag.Lookup("test.run"); f != nil && f.Value.String() != "" {
		return "", fmt.Errorf("ETCDBACKUP_E2E_SHARD=%s and -run %s: give one or the other", spec, f.Value)
	}
	tests, err := testNames(".")
	if err != nil {
		return "", err
	}
	return shardRunOf(spec, tests)
}

// shardRunOf is shard spec's pattern among tests.
func shardRunOf(spec string, tests []string) (string, error) {
	var i, n int
	if _, err := fmt.Sscanf(spec, "%d/%d", &i, &n); err != nil || n < 1 || i < 1 || i > n {
		return "", fmt.Errorf("ETCDBACKUP_E2E_SHARD=%q: want i/n with 1 <= i <= n", spec)
	}
	tests = append([]string(nil), tests...)
	sort.SliceStable(tests, func(a, b int) bool { return weight(tests[a]) > weight(tests[b]) })
	load := make([]time.Duration, n)
	shards := make([][]string, n)
	for _, t := range tests {
		k := 0
		for j := range load {
			if load[j] < load[k] {
				k = j
			}
		}
		load[k] += weight(t)
		shards[k] = append(shards[k], t)
	}
	if len(shards[i-1]) == 0 {
		return "", fmt.Errorf("ETCDBACKUP_E2E_SHARD=%s: no test for this shard (%d tests in all)", spec, len(tests))
	}
	return "^(" + strings.Join(shards[i-1], "|") + ")$", nil
}

// testNames are the Test functions of the package's files in dir.
func testNames(dir string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*_test.go"))
	if err != nil {
		return nil, err
	}
	re := regexp.MustCompile(`(?m)^func (Test\w+)\(t \*testing\.T\)`)
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		for _, m := range re.FindAllSubmatch(b, -1) {
			out = append(out, string(m[1]))
		}
	}
	sort.Strings(out)
	return out, nil
}

// testWeights are the longer tests' durations in seconds, as measured on a 2-core machine in
// four shards side by side (make test-e2e, go test -v; the mean of two runs): what the shards
// are balanced by. A test not listed weighs 1 s (most take 0.4 to 2 s); a stale figure only
// unbalances the shards.
var testWeights = map[string]int{
	"TestManyConfigsEverySlotCompletes":                          86,
	"TestJournalReplicaKilledLosesNoRevision":                    82,
	"TestAlertingRules":                                          44,
	"TestKKPSchema":                                              39,
	"TestConsoleFlowsInABrowser":                                 37,
	"TestPointInTimeRestoreBringsBackADeletedPrefix":             34,
	"TestConsoleSignInThroughOIDC":                               34,
	"TestNoServiceKeyMayChangeAStream":                           31,
	"TestDeletedNamespaceRestoresIntoANewOne":                    29,
	"TestRestoreStepFailureIsReportedAndRecoverable":             23,
	"TestRestoreSurvivesRestorerKillAndDeletion":                 22,
	"TestAWrongRestoreIsUndoneFromItsPreRestoreBackup":           22,
	"TestRestoreKeepsTheBackupItNeeds":                           21,
	"TestStagingIsUnreadableButToItsTwoServices":                 20,
	"TestRestoreOfAnUnhealthyEtcdGoesOnWithoutAPreRestoreBackup": 17,
	"TestRetentionKeepsTheNewest":                                16,
	"TestKrewInstallsThePlugin":                                  14,
	"TestRestoreRebuildsEtcdFromBackup":                          13,
	"TestKubectlPluginAsAClusterUser":                            12,
	"TestRestoreRefusesBadBackupsBeforeTouchingTheCluster":       12,
	"TestEncryptedBackupAndRestore":                              12,
	"TestRestoreFromTheCopyWhenThePrimaryBucketIsLost":           11,
	"TestTooManyBackupsPausesScheduling":                         8,
	"TestPruningResumesAfterS3Outage":                            8,
	"TestScheduledBackupsEndToEnd":                               7,
	"TestEtcdUnreachableFailsThatBackupOnly":                     6,
	"TestFailedBackupsAreDeleted":                                5,
	"TestConfigDeletionWaitsForUnreachableDestination":           4,
	"TestObjectLockedBackupsCannotBeDestroyed":                   4,
	"TestDeployManifestsApply":                                   3,
	"TestUploadRetriedWhileS3DownWithoutSecondSnapshot":          3,
}

func weight(test string) time.Duration {
	if w, ok := testWeights[test]; ok {
		return time.Duration(w) * time.Second
	}
	return time.Second
}
