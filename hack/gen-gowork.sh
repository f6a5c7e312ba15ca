#!/usr/bin/env bash
# Regenerates go.work from every go.mod in the tree, except the tools modules, which stay out
# of the workspace (GOWORK=off) so their dependencies never move the services' build list.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -f go.work go.work.sum.tmp
go work init
find . -name go.mod -not -path './tools/*' -not -path './.git/*' -printf '%h\n' | sort | while read -r dir; do
  go work use "$dir"
done
