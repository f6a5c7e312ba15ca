#!/usr/bin/env bash
# The end-to-end suite (e2e), in SHARDS shards side by side (default 4), each in a sandbox of
# its own: most of a test's time is spent waiting on processes, so on 2 cores four sandboxes
# finish in about a third of the time of one (231 s against 262 s with three; five took 231 s
# too). The services are built once and the test binary
# compiled once for every shard; each shard's output is printed when all have ended, and the
# suite fails when any shard does. The other e2e packages are compiled and vetted by go test.
#   hack/e2e.sh [SHARDS [FLAGS...]]   FLAGS go to the test binary (-test.v); SHARDS=1 runs
#                                     the suite in one sandbox, as go test would.
set -uo pipefail
shards=${1:-4}
shift || true
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/etcdbackup-e2e-run-XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$root/e2e" || exit 1

go test -count=1 $(go list ./... | grep -v '/e2e$') || exit 1
go run ./cmd/sandbox -build-services "$work/bin" || exit 1
go test -c -o "$work/e2e.test" . || exit 1

start=$(date +%s)
pids=()
for i in $(seq 1 "$shards"); do
  (
    began=$(date +%s)
    ETCDBACKUP_E2E_SHARD=$i/$shards ETCDBACKUP_E2E_SERVICES=$work/bin \
      "$work/e2e.test" -test.count=1 -test.timeout=30m "$@" >"$work/shard-$i.log" 2>&1
    rc=$?
    echo $(( $(date +%s) - began )) >"$work/shard-$i.time"
    exit $rc
  ) &
  pids+=($!)
done
failed=0
for i in $(seq 1 "$shards"); do
  if wait "${pids[$((i-1))]}"; then status=ok; else status=FAIL; failed=1; fi
  echo "=== e2e shard $i/$shards: $status in $(cat "$work/shard-$i.time")s"
  if [[ $status == FAIL ]]; then cat "$work/shard-$i.log"; else grep -v '^PASS$' "$work/shard-$i.log"; fi
done
elapsed=$(( $(date +%s) - start ))
if (( failed )); then
  echo "FAIL	github.com/etcd-backup/etcdbackup/e2e	${elapsed}s ($shards shards)"
  exit 1
fi
echo "ok  	github.com/etcd-backup/etcdbackup/e2e	${elapsed}s ($shards shards)"
