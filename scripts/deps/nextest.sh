#!/usr/bin/env bash
# cargo-nextest runs the test command's Rust tests with a hard limit per test
# (.config/nextest.toml). Installed from crates.io when the machine lacks it (idempotent).
set -euo pipefail
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
