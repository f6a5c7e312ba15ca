#!/usr/bin/env bash
# promtool, for the alerting rules' checks and unit tests (e2e/monitoring_test.go), into the
# directory $1: Debian's, from the package prometheus at a pinned version, downloaded and
# extracted without installing anything (seconds); where apt cannot fetch it, built from the
# Go module proxy (tools/prom: about 7 minutes on 2 cores the first time).
set -euo pipefail
out=$1
version=2.42.0+ds-5+deb12u1
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fetch() { (cd "$work" && apt-get download -qq "prometheus=$version") >/dev/null 2>&1; }
if command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null &&
  { fetch || { [ "$(id -u)" = 0 ] && apt-get update -qq && fetch; }; }; then
  dpkg-deb -x "$work"/prometheus_*.deb "$work/x"
  install -m 0755 "$work/x/usr/bin/promtool" "$out/promtool"
  echo "promtool: Debian's prometheus $version"
  exit 0
fi
echo "building promtool v0.316.0 from the module proxy (apt could not fetch Debian's prometheus $version; a few minutes on 2 cores the first time)"
cd "$root/tools/prom" && GOWORK=off go build -o "$out/" github.com/prometheus/prometheus/cmd/promtool
