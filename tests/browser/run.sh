#!/usr/bin/env bash
# Runs the end-to-end browser tests of the web client: installs Debian's chromium when it is
# missing, `npm ci` when node_modules is missing or older than package-lock.json, then
# `node --test` against the signalbox binary at $SIGNALBOX_BIN (default: target/debug/signalbox;
# build it first, e.g. `cargo build`). Screenshots go to test-artifacts/browser/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# Test files given as arguments are taken relative to where the script was started.
files=()
for f in "$@"; do files+=("$(realpath "$f")"); done
repo="$(cd "$here/../.." && pwd)"
cd "$here"

if [ ! -x /usr/bin/chromium ]; then
  echo "== installing chromium (apt)"
  export DEBIAN_FRONTEND=noninteractive
  sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  sudo_ apt-get update -qq
  sudo_ apt-get install -y -qq chromium >/dev/null
fi

stamp=node_modules/.package-lock.json
if [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ] || [ ! -d node_modules/playwright-core ]; then
  echo "== npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi

export SIGNALBOX_BIN="${SIGNALBOX_BIN:-$repo/target/debug/signalbox}"
if [ ! -x "$SIGNALBOX_BIN" ]; then
  echo "no signalbox binary at $SIGNALBOX_BIN: run cargo build first (or set SIGNALBOX_BIN)" >&2
  exit 2
fi
mkdir -p "$repo/test-artifacts/browser"
echo "== browser tests (chromium $(/usr/bin/chromium --version 2>/dev/null | awk '{print $2}'), binary $SIGNALBOX_BIN)"
# One file at a time: each starts its own server and browser, and the machine has 2 cores.
if [ ${#files[@]} -eq 0 ]; then files=("$here"/*.test.js); fi
exec node --test --test-concurrency=1 "${files[@]}"
