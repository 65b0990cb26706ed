#!/usr/bin/env bash
# Installs the third-party Socket.IO clients the interop tests drive (idempotent):
# Node's socket.io-client (tests/interop/node_modules) and python-socketio in a virtualenv
# (tests/interop/.venv), plus Node.js and Python themselves when the machine lacks them.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
dir="$root/tests/interop"
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

need=()
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

if [ ! -f "$dir/node_modules/.package-lock.json" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
fi

stamp="$dir/.venv/.installed"
if [ ! -f "$stamp" ] || [ "$dir/requirements.txt" -nt "$stamp" ]; then
  python3 -m venv "$dir/.venv"
  "$dir/.venv/bin/pip" install -q --disable-pip-version-check -r "$dir/requirements.txt"
  touch "$stamp"
fi
