#!/usr/bin/env bash
# What the dashboard's end-to-end test (tests/tests/api/dashboard.rs) needs:
# Node.js, playwright-core (npm ci from the committed package-lock.json) and
# Debian's Chromium at /usr/bin/chromium. Installs only what is missing
# (Debian packages only when run as root); never lets a tool download a
# browser. Otherwise fails, saying what to install.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

fail() {
  echo "tests/e2e/setup.sh: $*" >&2
  exit 1
}

apt_install() {
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || return 1
  echo "tests/e2e/setup.sh: installing $* (apt-get)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "$@" >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null && apt-get install -y -qq "$@" >/dev/null; }
}

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  apt_install nodejs npm ||
    fail "Node.js 18 or later and npm are missing: install them (Debian: apt-get install nodejs npm)"
fi
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)' ||
  fail "Node.js $(node --version) is too old: the test needs 18 or later"

if [ ! -x /usr/bin/chromium ]; then
  apt_install chromium fonts-liberation ||
    fail "Chromium is missing: install Debian's package (apt-get install chromium) so that /usr/bin/chromium exists"
fi

modules="$here/node_modules"
if [ ! -f "$modules/playwright-core/package.json" ] || [ "$here/package-lock.json" -nt "$modules/.package-lock.json" ]; then
  echo "tests/e2e/setup.sh: npm ci --prefix tests/e2e" >&2
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix "$here" --no-audit --no-fund --loglevel=error >&2 ||
    fail "npm ci --prefix tests/e2e failed: the npm registry must be reachable once to install playwright-core"
fi
