#!/usr/bin/env bash
# Signaling load benchmark for /rtc (run on demand; not part of the tests or CI).
#
#   bench/signaling/run.sh [--conns 10000] [--rate 10000] [--secs 10] [--pairs P] [--warmup 1]
#
# Builds the release server and examples/rtc_bench.rs, starts `signalbox serve` on a loopback
# port with a fresh data directory (no TURN), runs the client (N idle /rtc connections for
# memory per connection, then P 1:1 calls sending ice-candidates at R msg/s for forward
# latency), stops the server and prints a summary. Only 127.0.0.1 is contacted; the client
# exits by itself (bounded connections, bounded seconds, and a 15-minute cap here).
# Environment: CARGO_TARGET_DIR builds elsewhere; OUT=file keeps the full output (default: a temp
# file); SERVER_BIN=path runs another server build (e.g. to compare a change);
# SERVER_CPUS / CLIENT_CPUS (e.g. 0 and 1) pin the processes with taskset.
# Other processes on the machine skew the latency figures: the client reports the whole machine's
# CPU use while sending, so a run with a busy neighbour can be recognised and repeated.
set -euo pipefail
cd "$(dirname "$0")/../.."
. bench/lib.sh

target=${CARGO_TARGET_DIR:-target}
cargo build --release --bin signalbox --example rtc_bench
server_bin=${SERVER_BIN:-$target/release/signalbox}
bench_bin=$target/release/examples/rtc_bench

# One fd per connection on each side (plus a few): raise the limit for both processes.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

data=$(mktemp -d /tmp/signalbox-bench.XXXXXX)
out=${OUT:-$data.txt}
server=
cleanup() {
    if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    rm -rf "$data"
}
trap cleanup EXIT

server_pin=() client_pin=()
[ -n "${SERVER_CPUS:-}" ] && server_pin=(taskset -c "$SERVER_CPUS")
[ -n "${CLIENT_CPUS:-}" ] && client_pin=(taskset -c "$CLIENT_CPUS")

"${server_pin[@]}" "$server_bin" serve --listen 127.0.0.1:0 --data-dir "$data" --no-turn --no-sfu \
    >"$data/server.out" 2>"$data/server.err" &
server=$!

addr=$(server_address "$server" "$data")

{
    echo "# signalbox /rtc signaling benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "# machine: $(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)), $(free -g | awk '/^Mem:/{print $2}') GiB, $(uname -sr)"
    echo "# server: $server_bin serve --listen $addr --no-turn (pid $server); open files limit $(ulimit -n)"
    echo "# client: $bench_bin $* (same machine, same cores)"
    echo "# pinning: server ${SERVER_CPUS:-none}, client ${CLIENT_CPUS:-none}; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$out"

status=0
timeout 900 "${client_pin[@]}" "$bench_bin" --addr "$addr" --data-dir "$data" --server-pid "$server" "$@" \
    | tee -a "$out" || status=$?

server_alive=yes
kill -0 "$server" 2>/dev/null || server_alive="no (it exited during the run)"
kill "$server" 2>/dev/null || true
wait "$server" 2>/dev/null || true
server=

echo
echo "== summary =="
grep -E '^# (server|client|pinning)|per idle connection|msg/s offered|forward latency|by second|CPU while' "$out" || true
echo "server still running at the end: $server_alive; server log lines: $(wc -l <"$data/server.err") (warnings/errors: $(grep -ciE ' (warn|error) ' "$data/server.err" || true))"
echo "full output: $out"
exit "$status"
