#!/usr/bin/env bash
# make test: every module's unit and component tests (one go test over the workspace's
# packages, so that one module's builds overlap another's tests) beside the images'
# reproducibility test, then the end-to-end suite in shards side by side (hack/e2e.sh,
# E2E_SHARDS of them, default 4). Each phase's time is printed; any failure fails the run.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1
work=$(mktemp -d "${TMPDIR:-/tmp}/etcdbackup-test-XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$(date +%s)

pkgs=$(go list github.com/etcd-backup/etcdbackup/... | grep -v '/e2e') || exit 1
# shellcheck disable=SC2086 # one argument per package
go test -count=1 -timeout 20m $pkgs >"$work/unit.log" 2>&1 &
unit=$!
(cd tools/images && GOWORK=off go test -count=1 -timeout 20m ./...) >"$work/images.log" 2>&1 &
images=$!
failed=0
wait $unit || failed=1
cat "$work/unit.log"
wait $images || failed=1
cat "$work/images.log"
echo "--- unit and component tests, images: $(( $(date +%s) - start ))s"
(( failed )) && exit 1

e2e=$(date +%s)
./hack/e2e.sh "${E2E_SHARDS:-4}" || failed=1
echo "--- end-to-end suite: $(( $(date +%s) - e2e ))s; make test: $(( $(date +%s) - start ))s"
exit $failed
