#!/usr/bin/env bash
# Cluster signaling benchmark (issue #13; run on demand, not part of the tests or CI): what the
# Redis hop between nodes costs in latency and CPU. In one invocation, at the same calls and
# rates, with the same client (examples/rtc_bench.rs, /rtc):
#   a. sqlite:   one node on SQLite (the default), callers and callees on it;
#   b. cluster1: one node in cluster mode (PostgreSQL + Redis), callers and callees on it;
#   c. cluster2: two nodes (PostgreSQL + Redis), callers on node a, callees on node b, so every
#                forwarded candidate crosses Redis.
#
#   bench/cluster/run.sh [--setups sqlite,cluster1,cluster2] [--pairs 200] [--rates 2000,5000]
#                        [--secs 10] [--warmup 1]
#
# Builds the release server and rtc_bench (`cargo build --release --locked`), starts its own
# PostgreSQL 15 (initdb + postgres on a free 127.0.0.1 port, temp dir under /tmp, as `nobody`
# when run as root, durability off) for the whole run and, for each cluster setup, a fresh Redis
# (`redis-server` on a free 127.0.0.1 port, no persistence) and a fresh database, so no node or
# presence entry of one setup is seen by the next. The nodes share SIGNALBOX_JWT_SECRET and
# SIGNALBOX_TURN_SECRET (generated here) and are measured only once /healthz shows every node
# with Redis up on each of them. For each setup: --pairs 1:1 calls (2 connections each) whose
# callers send ICE candidates at each --rates total in turn for --secs seconds; the callees
# measure forward latency; server CPU (/proc, summed over the nodes) from the first send to the
# last receipt, per 1000 messages; Redis's CPU over the same window apart. The cluster nodes'
# `signalbox_cluster_messages_*` counters (/metrics) are printed after each setup. One Markdown
# table at the end.
# Only 127.0.0.1 is contacted; every client run is capped (timeout) and every server (signalbox,
# Redis, PostgreSQL) is stopped by its PID, also when the script is interrupted.
# Environment: CARGO_TARGET_DIR builds elsewhere; OUT=file keeps the full output (default: a temp
# file; the table also goes to OUT.table.md); SERVER_BIN=path runs another signalbox build;
# SERVER_CPUS / CLIENT_CPUS (default 0 and 1; empty: not pinned) pin the servers (signalbox,
# Redis and PostgreSQL alike) and the client with taskset; a pinned signalbox gets
# TOKIO_WORKER_THREADS = its number of cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
. bench/lib.sh

setups=sqlite,cluster1,cluster2 rates=2000,5000 pairs=200 secs=10 warmup=1
while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || { echo "$1: missing value" >&2; exit 2; }
    case $1 in
        --setups) setups=$2 ;;
        --rates | --rate) rates=$2 ;;
        --pairs) pairs=$2 ;;
        --secs) secs=$2 ;;
        --warmup) warmup=$2 ;;
        *) echo "unknown flag $1 (see the comment at the top of $0)" >&2; exit 2 ;;
    esac
    shift 2
done
for s in ${setups//,/ }; do
    case $s in sqlite | cluster1 | cluster2) ;; *) echo "--setups: sqlite, cluster1 or cluster2, not $s" >&2; exit 2 ;; esac
done
for n in ${rates//,/ } $pairs $secs $warmup; do
    case $n in '' | *[!0-9]*) echo "not a number: $n" >&2; exit 2 ;; esac
done

pg_bin=/usr/lib/postgresql/15/bin
redis_bin=/usr/bin/redis-server
if [[ $setups == *cluster* ]]; then
    command -v redis-cli >/dev/null || { echo "redis-cli is missing (Debian package redis-tools)" >&2; exit 1; }
    for b in "$pg_bin/initdb" "$pg_bin/postgres" "$pg_bin/psql" "$redis_bin"; do
        [ -x "$b" ] || { echo "$b is missing: run scripts/install-test-deps" >&2; exit 1; }
    done
fi
for c in curl jq; do
    command -v $c >/dev/null || { echo "$c is needed (for /healthz and /metrics)" >&2; exit 1; }
done

target=${CARGO_TARGET_DIR:-target}
cargo build --release --locked --bin signalbox --example rtc_bench
server_bin=${SERVER_BIN:-$target/release/signalbox}
bench_bin=$target/release/examples/rtc_bench

# One fd per connection on each side (plus a few): raise the limit for all processes.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

SERVER_CPUS=${SERVER_CPUS-0} CLIENT_CPUS=${CLIENT_CPUS-1}
server_pin=() client_pin=() server_threads=()
if [ -n "$SERVER_CPUS" ]; then
    server_pin=(taskset -c "$SERVER_CPUS")
    # tokio's default runtime takes its worker count from TOKIO_WORKER_THREADS.
    server_threads=(env "TOKIO_WORKER_THREADS=$(taskset -c "$SERVER_CPUS" nproc)")
fi
[ -n "$CLIENT_CPUS" ] && client_pin=(taskset -c "$CLIENT_CPUS")

# Under /tmp, so that `nobody` can enter PostgreSQL's part of it.
work=$(mktemp -d /tmp/signalbox-cluster-bench.XXXXXX)
chmod 755 "$work"
out=${OUT:-$work.txt}
results=$out.results
: >"$out"
: >"$results"

# Every server we start: its PID and what it is, stopped in reverse order.
servers=() client_pid= pg_dir= pg_pid= pg_port= redis_pid= redis_port=
as_pg_user=()
[ "$(id -u)" = 0 ] && as_pg_user=(runuser -u nobody --)

# stop_pid PID: TERM (INT for the postmaster: fast shutdown), up to 10 s, then KILL.
stop_pid() {
    local pid=$1 sig=${2:-TERM}
    [ -n "$pid" ] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -"$sig" "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}
stop_nodes() {
    local pid
    for pid in "${servers[@]}"; do stop_pid "$pid"; done
    servers=()
}
stop_redis() {
    stop_pid "$redis_pid"
    redis_pid=
}
stop_postgres() {
    [ -n "$pg_dir" ] || return 0
    local pid=
    # The postmaster's PID is postmaster.pid's first line (runuser may stand in between).
    [ -f "$pg_dir/data/postmaster.pid" ] && pid=$(head -n1 "$pg_dir/data/postmaster.pid")
    [ -n "$pid" ] && stop_pid "$pid" INT
    stop_pid "$pg_pid"
    pg_pid=
}
cleanup() {
    # GNU timeout passes the TERM on to the client it runs.
    [ -n "$client_pid" ] && { kill "$client_pid" 2>/dev/null || true; }
    stop_nodes
    stop_redis
    stop_postgres
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
        shuf -i 20000-60000 -n 1
}

start_postgres() {
    pg_dir=$work/pg
    mkdir -p "$pg_dir/sock"
    [ "$(id -u)" = 0 ] && chown -R nobody: "$pg_dir"
    (cd / && timeout 120 "${as_pg_user[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -U postgres \
        --auth=trust --no-sync -E UTF8 --no-locale >"$work/initdb.out" 2>&1) ||
        { cat "$work/initdb.out" >&2; echo "initdb failed" >&2; exit 1; }
    pg_port=$(free_port)
    (cd / && exec "${server_pin[@]}" "${as_pg_user[@]}" "$pg_bin/postgres" -D "$pg_dir/data" \
        -p "$pg_port" -c listen_addresses=127.0.0.1 -c "unix_socket_directories=$pg_dir/sock" \
        -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200) \
        >"$work/postgres.out" 2>&1 &
    pg_pid=$!
    for _ in $(seq 1 600); do
        if [ "$(sed -n 8p "$pg_dir/data/postmaster.pid" 2>/dev/null | tr -d ' ')" = ready ] &&
            psql_run postgres 'SELECT 1' >/dev/null 2>&1; then
            echo "# PostgreSQL 15 on 127.0.0.1:$pg_port (postmaster pid $(head -n1 "$pg_dir/data/postmaster.pid"))" | tee -a "$out"
            return
        fi
        kill -0 "$pg_pid" 2>/dev/null || { cat "$work/postgres.out" >&2; echo "postgres exited" >&2; exit 1; }
        sleep 0.1
    done
    echo "postgres not ready within 60 s" >&2
    exit 1
}

psql_run() {
    timeout 30 "$pg_bin/psql" -X -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" -U postgres \
        -d "$1" -c "$2"
}

# start_redis: a fresh Redis on a free port (sets redis_pid, redis_port).
n_redis=0
start_redis() {
    n_redis=$((n_redis + 1))
    local dir=$work/redis-$n_redis
    mkdir -p "$dir"
    redis_port=$(free_port)
    "${server_pin[@]}" "$redis_bin" --port "$redis_port" --bind 127.0.0.1 --save '' \
        --appendonly no --daemonize no --protected-mode yes --dir "$dir" \
        >"$dir/redis.out" 2>&1 &
    redis_pid=$!
    for _ in $(seq 1 300); do
        if [ "$(timeout 2 redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null)" = PONG ]; then
            echo "# Redis $("$redis_bin" --version | sed 's/.*v=\([^ ]*\).*/\1/') on 127.0.0.1:$redis_port (pid $redis_pid)" | tee -a "$out"
            return
        fi
        kill -0 "$redis_pid" 2>/dev/null || { cat "$dir/redis.out" >&2; echo "redis-server exited" >&2; exit 1; }
        sleep 0.1
    done
    echo "redis-server did not answer PING within 30 s" >&2
    exit 1
}

jwt_secret=$(head -c 48 /dev/urandom | base64 | tr -d '\n+/=')
turn_secret=$(head -c 32 /dev/urandom | base64 | tr -d '\n+/=')

# start_node NAME [CLUSTER_ARGS...]: a signalbox node in a fresh data directory; appends its
# PID to servers and sets node_pid, node_addr, node_data.
start_node() {
    local name=$1
    shift
    node_data=$work/node-$name-$RANDOM$RANDOM
    mkdir -p "$node_data"
    local env_args=()
    if [ $# -gt 0 ]; then
        # The shared secret, where rtc_bench mints its tokens from (the node takes it from
        # the environment and writes nothing).
        printf '%s' "$jwt_secret" >"$node_data/jwt-secret"
        env_args=("SIGNALBOX_JWT_SECRET=$jwt_secret" "SIGNALBOX_TURN_SECRET=$turn_secret")
    fi
    env "${env_args[@]}" "${server_threads[@]}" "${server_pin[@]}" "$server_bin" serve \
        --listen 127.0.0.1:0 --data-dir "$node_data" --no-turn --no-sfu "$@" \
        >"$node_data/server.out" 2>"$node_data/server.err" &
    node_pid=$!
    servers+=("$node_pid")
    node_addr=$(server_address "$node_pid" "$node_data")
    echo "# node $name: pid $node_pid on $node_addr ($(ls "/proc/$node_pid/task" | wc -l) threads; affinity $(taskset -pc "$node_pid" | sed 's/.*: //'))" | tee -a "$out"
}

# wait_cluster ADDR N: until ADDR's /healthz shows N live nodes with Redis up (30 s at most).
wait_cluster() {
    local h=
    for _ in $(seq 1 150); do
        h=$(curl -s --max-time 2 "http://$1/healthz" || true)
        if [ "$(jq -r '"\(.status) \(.cluster.redis) \(.cluster.nodes)"' <<<"$h" 2>/dev/null)" = "ok ok $2" ]; then
            echo "# $1 /healthz: $h" | tee -a "$out"
            return
        fi
        sleep 0.2
    done
    echo "$1 did not see $2 nodes with Redis up within 30 s; last /healthz: $h" >&2
    exit 1
}

# cluster_counters ADDR...: the cluster_messages_* counters of each node.
cluster_counters() {
    local a
    for a in "$@"; do
        echo "# $a /metrics: $(curl -s --max-time 5 "http://$a/metrics" | grep -E '^signalbox_cluster_(messages|nodes|redis)' | tr '\n' ' ' || true)" | tee -a "$out"
    done
}

# run_client LABEL CALLER_ADDR CALLEE_ADDR DATA SERVER_PIDS [AUX_PIDS]
run_client() {
    local label=$1 a=$2 b=$3 data=$4 pids=$5 aux=${6:-}
    local extra=() status=0
    [ -n "$aux" ] && extra=(--aux-pid "$aux")
    # In the background, so that a signal to this script is handled (and the client stopped) at
    # once; tail shows its output meanwhile and exits with it.
    timeout 600 "${client_pin[@]}" "$bench_bin" --addr "$a" --callee-addr "$b" \
        --data-dir "$data" --server-pid "$pids" "${extra[@]}" --transport rtc --phases load \
        --conns 0 --pairs "$pairs" --rates "$rates" --secs "$secs" --warmup "$warmup" \
        >"$data/client.out" 2>&1 &
    client_pid=$!
    tail -n +1 -f --pid="$client_pid" "$data/client.out" &
    local tailer=$!
    wait "$client_pid" || status=$?
    client_pid=
    wait "$tailer" 2>/dev/null || true
    cat "$data/client.out" >>"$out"
    local pid alive=yes
    for pid in ${pids//,/ }; do
        kill -0 "$pid" 2>/dev/null || alive="no (pid $pid exited during the run)"
    done
    echo "# servers still running: $alive" | tee -a "$out"
    sed -n "s/^RESULT /$label /p" "$data/client.out" >>"$results"
    return "$status"
}

# node_logs DATA...: warnings and errors in the nodes' logs.
node_logs() {
    local d
    for d in "$@"; do
        echo "# $(basename "$d") log: $(wc -l <"$d/server.err") lines, warnings/errors: $(grep -ciE 'warn|error' "$d/server.err" || true)" | tee -a "$out"
        grep -iE 'warn|error' "$d/server.err" | head -n 5 | sed 's/^/#   /' | tee -a "$out" || true
    done
}

commit=$(git rev-parse --short HEAD)
git diff --quiet HEAD -- examples bench src 2>/dev/null || commit="$commit + uncommitted changes"
{
    echo "# cluster signaling benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $commit"
    echo "# machine: $(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)), $(free -g | awk '/^Mem:/{print $2}') GiB, $(uname -sr)"
    echo "# setups: $setups; rates: $rates msg/s over $pairs calls, $secs s each (first $warmup s not measured)"
    echo "# signalbox: $server_bin; pinning: servers (signalbox, Redis, PostgreSQL) ${SERVER_CPUS:-none} (${server_threads[*]:-tokio default threads}), client ${CLIENT_CPUS:-none}; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee -a "$out"

[[ $setups == *cluster* ]] && start_postgres

status=0
started=$SECONDS
for setup in ${setups//,/ }; do
    case $setup in
        sqlite)
            label="a. one node, SQLite"
            echo "== $label ==" | tee -a "$out"
            start_node solo
            run_client "$label" "$node_addr" "$node_addr" "$node_data" "$node_pid" || status=$?
            node_logs "$node_data"
            stop_nodes
            ;;
        cluster1)
            label="b. one node, cluster mode (PostgreSQL + Redis)"
            echo "== $label ==" | tee -a "$out"
            start_redis
            psql_run postgres "CREATE DATABASE bench_one" >/dev/null
            db=postgres://postgres@127.0.0.1:$pg_port/bench_one
            start_node a --database-url "$db" --redis-url "redis://127.0.0.1:$redis_port" --node-name a
            wait_cluster "$node_addr" 1
            run_client "$label" "$node_addr" "$node_addr" "$node_data" "$node_pid" "$redis_pid" || status=$?
            cluster_counters "$node_addr"
            node_logs "$node_data"
            stop_nodes
            stop_redis
            ;;
        cluster2)
            label="c. two nodes, callers on a, callees on b (sum of both nodes)"
            echo "== $label ==" | tee -a "$out"
            start_redis
            psql_run postgres "CREATE DATABASE bench_two" >/dev/null
            db=postgres://postgres@127.0.0.1:$pg_port/bench_two
            start_node a --database-url "$db" --redis-url "redis://127.0.0.1:$redis_port" --node-name a
            a_addr=$node_addr a_pid=$node_pid a_data=$node_data
            start_node b --database-url "$db" --redis-url "redis://127.0.0.1:$redis_port" --node-name b
            b_addr=$node_addr b_pid=$node_pid b_data=$node_data
            wait_cluster "$a_addr" 2
            wait_cluster "$b_addr" 2
            # Tokens are minted from a's copy of the shared secret; b holds the same.
            run_client "$label" "$a_addr" "$b_addr" "$a_data" "$a_pid,$b_pid" "$redis_pid" || status=$?
            cluster_counters "$a_addr" "$b_addr"
            node_logs "$a_data" "$b_data"
            stop_nodes
            stop_redis
            ;;
    esac
done

echo | tee -a "$out"
echo "== cluster benchmark ($((SECONDS - started)) s; load average now $(cut -d' ' -f1-3 /proc/loadavg)) ==" | tee -a "$out"
"$bench_bin" --report-runs "$results" | tee "$out.table.md" | tee -a "$out"
echo "full output: $out; RESULT lines: $results; table: $out.table.md"
[ "$status" -eq 0 ] || echo "a client run failed (exit $status): see $out" >&2
exit "$status"
