#!/usr/bin/env bash
# make verify: nothing compiled twice. make test compiles the workspace's packages and builds
# the tools it needs from the module proxy with the same flags (the Makefile's CGO_ENABLED and
# GOFLAGS), so a package both import is compiled once, by whichever comes first, if both
# resolve it to the same module version. This lists every package that kube-apiserver,
# kube-controller-manager and kubectl (tools/kube: 900 packages in common, client-go and
# k8s.io/api among them) or Dex (tools/dex) build at another version than the workspace, and
# fails when there is one: raise the lower side's requirement (GOWORK=off go get
# MODULE@VERSION in the tool's module, or in the workspace modules that require it), then
# GOWORK=off go mod tidy. Not checked: versitygw and nats (tools/go.mod, whose code generators
# need a protobuf newer than the workspace's release) and krew (Kubernetes 0.21's libraries).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/etcdbackup-shared-XXXXXX")
trap 'rm -rf "$work"' EXIT
fmt='{{with .Module}}{{$.ImportPath}} {{if .Replace}}{{.Replace.Path}}@{{.Replace.Version}}{{else}}{{.Path}}@{{.Version}}{{end}}{{end}}'

cd "$root"
go list -deps -test -f "$fmt" github.com/etcd-backup/etcdbackup/... | sort -u >"$work/workspace"

failed=0
check() {
  local dir=$1
  shift
  (cd "$root/$dir" && GOWORK=off go list -deps -f "$fmt" "$@") | sort -u >"$work/tool"
  join "$work/workspace" "$work/tool" >"$work/both"
  awk '$2 != $3 {print "  " $1 ": " $2 " in the workspace, " $3 " in '"$dir"'"}' "$work/both" >"$work/differ"
  echo "$dir: $(wc -l <"$work/both") packages shared with the workspace, $(wc -l <"$work/differ") at other versions"
  if [[ -s $work/differ ]]; then
    cat "$work/differ"
    failed=1
  fi
}
check tools/kube ./cmd/kube-apiserver ./cmd/kube-controller-manager ./cmd/kubectl
check tools/dex github.com/dexidp/dex/cmd/dex
exit $failed
