#!/usr/bin/env bash
# Signaling load benchmark (run on demand; not part of the tests or CI): Node's Socket.IO (the
# anchor, bench/signaling/node/server.js), signalbox's /socket.io/ and signalbox's /rtc, side by
# side in one invocation, all driven by the same client (examples/rtc_bench.rs).
#
#   bench/signaling/run.sh [--servers node,socketio,rtc] [--rates 5000,10000] [--conns 10000]
#                          [--pairs 500] [--secs 10] [--warmup 1]
#   bench/signaling/run.sh --conns 1000,5000,10000 --rates 5000,10000,20000   # where the knee is
#   bench/signaling/run.sh --servers rtc --rates 10000                         # /rtc alone
#
# Builds the release server and examples/rtc_bench.rs, installs the Node anchor's socket.io
# (`npm ci --prefix bench/signaling/node`, only when node_modules is missing or was installed from
# another package-lock.json; nothing is downloaded while measuring). Then, for each server in turn:
# for each --conns count N, a fresh server (signalbox: `serve --listen 127.0.0.1:0` on a fresh
# data directory, no TURN, no SFU; Node: the same kind of generated secret) gets N idle
# authenticated connections and its VmRSS is read before and after (KiB per idle connection);
# then one more fresh server gets --pairs 1:1 calls (2 connections each, the call set up as a
# client does) whose callers send ICE candidates (~350-byte frames) at each --rates total in
# turn for --secs seconds, the callees measuring forward latency; server CPU is read from /proc
# over each rate's window (first send to last receipt) and given per 1000 messages. At the end
# one table with the ratios to Node (CPU per message, memory per connection).
# Only 127.0.0.1 is contacted; every client run is capped (timeout) and every server is stopped
# by its PID, also when the script is interrupted.
# Environment: CARGO_TARGET_DIR builds elsewhere; OUT=file keeps the full output (default: a temp
# file; the table also goes to OUT.table.md); SERVER_BIN=path runs another signalbox build;
# SERVER_CPUS / CLIENT_CPUS (default 0 and 1; empty: not pinned) pin the servers and the client
# with taskset; a pinned signalbox gets TOKIO_WORKER_THREADS = its number of cores.
# Other processes on the machine skew the latency figures: the client reports the whole machine's
# CPU use while sending ("other processes"), so a run with a busy neighbour can be recognised and
# repeated.
set -euo pipefail
cd "$(dirname "$0")/../.."
. bench/lib.sh

servers=node,socketio,rtc rates=5000,10000 conns=10000 pairs=500 secs=10 warmup=1
while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || { echo "$1: missing value" >&2; exit 2; }
    case $1 in
        --servers) servers=$2 ;;
        --rates | --rate) rates=$2 ;;
        --conns) conns=$2 ;;
        --pairs) pairs=$2 ;;
        --secs) secs=$2 ;;
        --warmup) warmup=$2 ;;
        *) echo "unknown flag $1 (see the comment at the top of $0)" >&2; exit 2 ;;
    esac
    shift 2
done
for s in ${servers//,/ }; do
    case $s in node | socketio | rtc) ;; *) echo "--servers: node, socketio or rtc, not $s" >&2; exit 2 ;; esac
done
for n in ${conns//,/ } ${rates//,/ } $pairs $secs $warmup; do
    case $n in '' | *[!0-9]*) echo "not a number: $n" >&2; exit 2 ;; esac
done

target=${CARGO_TARGET_DIR:-target}
cargo build --release --locked --bin signalbox --example rtc_bench
server_bin=${SERVER_BIN:-$target/release/signalbox}
bench_bin=$target/release/examples/rtc_bench
node_dir=bench/signaling/node

if [[ ,$servers, == *,node,* ]]; then
    command -v node >/dev/null || { echo "node is not installed (needed for --servers node)" >&2; exit 1; }
    stamp=$node_dir/node_modules/.bench-lock.sha256
    want=$(sha256sum "$node_dir/package-lock.json" | cut -d' ' -f1)
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        timeout 300 npm ci --prefix "$node_dir" --ignore-scripts --no-audit --no-fund
        echo "$want" >"$stamp"
    fi
fi

# One fd per connection on each side (plus a few): raise the limit for all processes.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

SERVER_CPUS=${SERVER_CPUS-0} CLIENT_CPUS=${CLIENT_CPUS-1}
server_pin=() client_pin=() server_threads=()
if [ -n "$SERVER_CPUS" ]; then
    server_pin=(taskset -c "$SERVER_CPUS")
    # signalbox's runtime is tokio's default multi-threaded one, which takes its worker count
    # from TOKIO_WORKER_THREADS: one per core it is pinned to.
    server_threads=(env "TOKIO_WORKER_THREADS=$(taskset -c "$SERVER_CPUS" nproc)")
fi
[ -n "$CLIENT_CPUS" ] && client_pin=(taskset -c "$CLIENT_CPUS")

work=$(mktemp -d /tmp/signalbox-bench.XXXXXX)
out=${OUT:-$work.txt}
results=$out.results
: >"$out"
: >"$results"
server= data= client_pid=
stop_server() {
    if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
        kill "$server" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$server" 2>/dev/null || true
    fi
    [ -n "$server" ] && { wait "$server" 2>/dev/null || true; }
    server=
}
cleanup() {
    # GNU timeout passes the TERM on to the client it runs.
    [ -n "$client_pid" ] && { kill "$client_pid" 2>/dev/null || true; }
    stop_server
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_server KIND: a fresh server of KIND (node, socketio or rtc) in a fresh directory; sets
# server (its PID), data and addr.
n_started=0
start_server() {
    n_started=$((n_started + 1))
    data=$work/$1-$n_started
    mkdir -p "$data"
    if [ "$1" = node ]; then
        # A secret like signalbox's generated one, where rtc_bench mints its tokens from.
        head -c 48 /dev/urandom | base64 | tr -d '\n+/=' >"$data/jwt-secret"
        JWT_SECRET_FILE=$data/jwt-secret "${server_pin[@]}" node "$node_dir/server.js" \
            >"$data/server.out" 2>"$data/server.err" &
    else
        "${server_threads[@]}" "${server_pin[@]}" "$server_bin" serve --listen 127.0.0.1:0 \
            --data-dir "$data" --no-turn --no-sfu >"$data/server.out" 2>"$data/server.err" &
    fi
    server=$!
    addr=$(server_address "$server" "$data")
    local threads
    threads=$(ls "/proc/$server/task" | wc -l)
    echo "# $1 server pid $server on $addr ($threads threads; affinity $(taskset -pc "$server" | sed 's/.*: //'))" | tee -a "$out"
}

# client KIND ARGS...: runs rtc_bench against the current server, keeping its RESULT lines.
client() {
    local kind=$1 transport=rtc
    shift
    [ "$kind" = rtc ] || transport=socketio
    local status=0
    # In the background, so that a signal to this script is handled (and the client stopped) at
    # once; tail shows its output meanwhile and exits with it.
    timeout 600 "${client_pin[@]}" "$bench_bin" --addr "$addr" --data-dir "$data" \
        --server-pid "$server" --transport "$transport" "$@" >"$data/client.out" 2>&1 &
    client_pid=$!
    tail -n +1 -f --pid="$client_pid" "$data/client.out" &
    local tailer=$!
    wait "$client_pid" || status=$?
    client_pid=
    wait "$tailer" 2>/dev/null || true
    cat "$data/client.out" >>"$out"
    local alive=yes
    kill -0 "$server" 2>/dev/null || alive="no (it exited during the run)"
    echo "# server still running: $alive; server log lines: $(wc -l <"$data/server.err") (warnings/errors: $(grep -ciE 'warn|error' "$data/server.err" || true))" | tee -a "$out"
    sed -n "s/^RESULT /$kind /p" "$data/client.out" >>"$results"
    return "$status"
}

commit=$(git rev-parse --short HEAD)
git diff --quiet HEAD -- examples bench src 2>/dev/null || commit="$commit + uncommitted changes"
{
    echo "# signaling benchmark, side by side, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $commit"
    echo "# machine: $(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)), $(free -g | awk '/^Mem:/{print $2}') GiB, $(uname -sr); node $(node --version 2>/dev/null || echo '-')"
    echo "# servers: $servers; idle connections: $conns; rates: $rates msg/s over $pairs calls, $secs s each (first $warmup s not measured)"
    echo "# signalbox: $server_bin; Node anchor: $node_dir/server.js (socket.io $(sed -n 's/.*"socket.io": "\(.*\)".*/\1/p' "$node_dir/package.json"))"
    echo "# pinning: servers ${SERVER_CPUS:-none} (${server_threads[*]:-tokio default threads}), client ${CLIENT_CPUS:-none}; open files limit $(ulimit -n); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee -a "$out"

status=0
started=$SECONDS
for kind in ${servers//,/ }; do
    for n in ${conns//,/ }; do
        [ "$n" -gt 0 ] || continue
        echo "== $kind: $n idle connections ==" | tee -a "$out"
        start_server "$kind"
        client "$kind" --phases idle --conns "$n" || status=$?
        stop_server
    done
    echo "== $kind: $pairs calls at $rates msg/s ==" | tee -a "$out"
    start_server "$kind"
    client "$kind" --phases load --conns 0 --pairs "$pairs" --rates "$rates" --secs "$secs" \
        --warmup "$warmup" || status=$?
    stop_server
done

echo | tee -a "$out"
echo "== side by side ($((SECONDS - started)) s; load average now $(cut -d' ' -f1-3 /proc/loadavg)) ==" | tee -a "$out"
"$bench_bin" --report "$results" | tee "$out.table.md" | tee -a "$out"
echo "full output: $out; RESULT lines: $results; table: $out.table.md"
[ "$status" -eq 0 ] || echo "a client run failed (exit $status): see $out" >&2
exit "$status"
