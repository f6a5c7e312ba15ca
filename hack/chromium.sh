#!/usr/bin/env bash
# Makes sure Debian's Chromium is installed for the console's browser tests (e2e/console_test.go):
# installs the package chromium as root when it is missing, else says in one line what to do.
set -euo pipefail
for c in "${ETCDBACKUP_CHROMIUM:-}" /usr/bin/chromium /usr/bin/chromium-browser; do
  if [ -n "$c" ] && [ -x "$c" ]; then exit 0; fi
done
if [ "$(id -u)" != 0 ]; then
  echo "chromium is missing: install the Debian package chromium (sudo apt-get install chromium) or set ETCDBACKUP_CHROMIUM to a Chromium binary" >&2
  exit 1
fi
echo "installing Debian's chromium for the console's browser tests"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium >/dev/null || { echo "installing chromium failed: install the Debian package chromium" >&2; exit 1; }
test -x /usr/bin/chromium
