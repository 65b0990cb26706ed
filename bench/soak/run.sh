#!/usr/bin/env bash
# Soak benchmark for /rtc (run on demand; not part of the tests or CI).
#
#   bench/soak/run.sh [--tolerance 10] [--rss-floor-mb 16] [client flags]
#       client flags: [--conns 5000] [--secs 600] [--rate 50] [--candidates 4]
#                     [--resume-every 7] [--reconnect-every 5] [--settle 45] [--parallel 200]
#   bench/soak/run.sh --conns 500 --secs 60                  # the smoke run
#
# Builds the release server and examples/soak.rs, writes a config file into a fresh temporary
# data directory, starts `signalbox serve` on 127.0.0.1 port 0 (no TURN) and reads the server's
# VmRSS (/proc/<pid>/status) and open fds (/proc/<pid>/fd) once it is up: the baseline. Then it
# runs the client: N connections as N/2 pairs of distinct users making call cycles (invite,
# accept, candidates both ways, hang-up, reconnects and mid-call drops with resume) for the given
# seconds; the client then disconnects everyone and waits --settle seconds. Once it has exited,
# this script reads VmRSS and fds again and compares them with the baseline, stops the server by
# its PID and prints a summary.
#
# Exit status non-zero when the client counted any lost message (an unanswered request or an
# expected event that did not arrive by its deadline), an error or unexpected frame, a connection
# refused or closed by the server, or a call left ringing/active; or when VmRSS or the fd count
# after the settle period is more than --tolerance percent above the baseline; or when the
# server died. VmRSS has an absolute floor: it passes while it is at most --rss-floor-mb MiB
# above the baseline even if that is more than the percentage, because the baseline of a fresh
# server is small (about 10 MB) and one-time growth the first connections and calls cause
# (tokio worker and blocking threads, their malloc arenas, SQLite's page caches of the 8 pooled
# connections, code pages) is not a per-connection leak; the summary prints which bound applied.
#
# Connection caps: every soak user holds one connection (two for a moment while reconnecting),
# so the default max_connections_per_user (20) holds; max_connections is written as
# max(50000, 2 x conns) so the total cap can never refuse the soak. The per-connection rate
# limit (100/s, burst 300) stays at its default: a soak connection sends a few messages per
# call cycle. --rate (call cycles per second over all pairs) defaults to 50: at 100 the server's
# SQLite writes saturate on a 2-core VM shared with other work and the run collapses (see
# BENCHMARKS.md, "Soak"). The server keeps a dropped connection's calls for reconnect_grace
# (20 s); the default --settle (45 s) is longer than that and than ring_timeout (45 s, hence
# 45), so a call a failed cycle left behind has ended before the "after" reading.
#
# Environment: CARGO_TARGET_DIR builds elsewhere; OUT=file keeps the full output (default: a file
# next to the temporary data directory; it and OUT.server.log, the server's log, are kept); SERVER_BIN=path runs another server build;
# SOAK_LOG_LEVEL (default info) is the server's log_level; SOAK_TIMEOUT caps the client
# (default: secs + settle + 1200 s); SOAK_MEMORY_CHECK=1 (needs gdb and ptrace rights) reads
# sqlite3_memory_used() in the server at the baseline and after the settle (SQLite's own heap:
# its page caches and schemas, which the database the run wrote fills), so the summary can tell
# it from the memory of the connections (it does not change the verdict). SIGNALBOX_* variables are removed from the server's
# environment so they cannot override the config written here. Only 127.0.0.1 is contacted.
set -euo pipefail
cd "$(dirname "$0")/../.."
. bench/lib.sh

tolerance=10
rss_floor_mb=16
secs=600
settle=45
conns=5000
client_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --tolerance) tolerance=$2; shift 2 ;;
        --rss-floor-mb) rss_floor_mb=$2; shift 2 ;;
        --secs) secs=$2; client_args+=("$1" "$2"); shift 2 ;;
        --settle) settle=$2; client_args+=("$1" "$2"); shift 2 ;;
        --conns) conns=$2; client_args+=("$1" "$2"); shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        *) [ $# -ge 2 ] || { echo "$1: missing value" >&2; exit 2; }
           client_args+=("$1" "$2"); shift 2 ;;
    esac
done
case "$secs$settle$conns$tolerance$rss_floor_mb" in
    *[!0-9]*) echo "--secs, --settle, --conns, --tolerance and --rss-floor-mb take whole numbers" >&2; exit 2 ;;
esac
client_args+=(--settle "$settle")

target=${CARGO_TARGET_DIR:-target}
cargo build --release --locked --bin signalbox --example soak
server_bin=${SERVER_BIN:-$target/release/signalbox}
soak_bin=$target/release/examples/soak

# One fd per connection on each side (plus a few hundred): raise the limit for both processes.
need=$((conns + 512))
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
    echo "open files limit $(ulimit -n) is below the $need that $conns connections need" >&2
    exit 2
fi

data=$(mktemp -d /tmp/signalbox-soak.XXXXXX)
out=${OUT:-$data.txt}
server=
cleanup() {
    if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    # The server's log outlives the data directory (for a post-mortem of a failed run).
    [ -f "$data/server.err" ] && cp "$data/server.err" "$out.server.log" 2>/dev/null
    rm -rf "$data"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

max_connections=$((conns * 2 > 50000 ? conns * 2 : 50000))
cat >"$data/signalbox.toml" <<EOF
# Written by bench/soak/run.sh.
listen = "127.0.0.1:0"
data_dir = "$data"
no_turn = true
no_sfu = true
log_level = "${SOAK_LOG_LEVEL:-info}"
max_connections = $max_connections
max_connections_per_user = 20
socket_rate_per_second = 100
socket_rate_burst = 300
reconnect_grace = "20s"
ring_timeout = "45s"
EOF

for v in $(compgen -e); do
    case "$v" in SIGNALBOX_*) unset "$v" ;; esac
done
"$server_bin" serve --config "$data/signalbox.toml" >"$data/server.out" 2>"$data/server.err" &
server=$!

addr=$(server_address "$server" "$data")
case "$addr" in 127.0.0.1:*) ;; *) echo "server listens on $addr, not loopback" >&2; exit 1 ;; esac

status_kib() { awk -v f="$1:" '$1 == f {print $2}' "/proc/$server/status"; }
rss_kib() { status_kib VmRSS; }
fds() { find "/proc/$server/fd" -mindepth 1 -maxdepth 1 | wc -l; }
cpu_secs() {
    # utime + stime (fields 14 and 15, counted after the parenthesised name) in seconds.
    sed 's/^.*) //' "/proc/$server/stat" | awk -v hz="$(getconf CLK_TCK)" '{printf "%.1f", ($12 + $13) / hz}'
}

sleep 1
base_rss=$(rss_kib)
base_anon=$(status_kib RssAnon)
base_fds=$(fds)
# SQLite's own heap in KiB, read in the server by gdb (SOAK_MEMORY_CHECK=1), or empty.
sqlite_kib() {
    [ "${SOAK_MEMORY_CHECK:-0}" = 1 ] && command -v gdb >/dev/null || return 0
    gdb -p "$server" -batch -ex 'print (long long)sqlite3_memory_used()' 2>/dev/null \
        | awk '/^\$1 = / {printf "%d", $3 / 1024}'
}
base_sqlite=$(sqlite_kib)

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || commit="$commit (with uncommitted changes)"
{
    echo "# signalbox /rtc soak, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $commit"
    echo "# machine: $(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)), $(free -g | awk '/^Mem:/{print $2}') GiB, $(uname -sr)"
    echo "# server: $server_bin serve --config $data/signalbox.toml on $addr (pid $server); max_connections $max_connections; open files limit $(ulimit -n)"
    echo "# client: $soak_bin ${client_args[*]} (same machine, same cores); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# baseline after startup: VmRSS ${base_rss} KiB (RssAnon ${base_anon} KiB), ${base_fds} fds"
} | tee "$out"

status=0
timeout "${SOAK_TIMEOUT:-$((secs + settle + 1200))}" \
    "$soak_bin" --addr "$addr" --data-dir "$data" --server-pid "$server" "${client_args[@]}" \
    | tee -a "$out" || status=$?

server_alive=yes
verdict=
if kill -0 "$server" 2>/dev/null; then
    after_rss=$(rss_kib)
    after_anon=$(status_kib RssAnon)
    after_fds=$(fds)
    cpu=$(cpu_secs)
    # Percent bound, and the absolute floor for VmRSS.
    rss_pct_limit=$((base_rss + base_rss * tolerance / 100))
    rss_floor_limit=$((base_rss + rss_floor_mb * 1024))
    rss_limit=$((rss_pct_limit > rss_floor_limit ? rss_pct_limit : rss_floor_limit))
    fds_limit=$((base_fds + base_fds * tolerance / 100))
    rss_ok=yes fds_ok=yes
    [ "$after_rss" -le "$rss_limit" ] || { rss_ok=NO; status=1; }
    [ "$after_fds" -le "$fds_limit" ] || { fds_ok=NO; status=1; }
    bound="+$tolerance%"
    [ "$rss_limit" -eq "$rss_pct_limit" ] || bound="the +$rss_floor_mb MiB floor (+$tolerance% would be $rss_pct_limit KiB)"
    verdict=$(printf 'VmRSS baseline %d KiB -> after %d KiB (%+.1f%%; RssAnon %d -> %d KiB), limit %d KiB by %s: %s\nfds baseline %d -> after %d (%+.1f%%), limit %d by +%d%%: %s\nserver CPU time in all: %s s' \
        "$base_rss" "$after_rss" "$(awk -v a="$after_rss" -v b="$base_rss" 'BEGIN{print (a/b-1)*100}')" \
        "$base_anon" "$after_anon" "$rss_limit" "$bound" "$rss_ok" \
        "$base_fds" "$after_fds" "$(awk -v a="$after_fds" -v b="$base_fds" 'BEGIN{print (a/b-1)*100}')" \
        "$fds_limit" "$tolerance" "$fds_ok" "$cpu")
    # Diagnostic only (does not change the verdict): how much of the memory is SQLite's.
    after_sqlite=$(sqlite_kib)
    if [ -n "$after_sqlite" ]; then
        verdict=$(printf '%s\nSQLite heap (diagnostic, SOAK_MEMORY_CHECK=1): %s KiB at the baseline, %s KiB after; VmRSS without it: %d -> %d KiB' \
            "$verdict" "${base_sqlite:-?}" "$after_sqlite" "$((base_rss - ${base_sqlite:-0}))" "$((after_rss - after_sqlite))")
    fi
else
    server_alive="no (it exited during the run)"
    status=1
fi
kill "$server" 2>/dev/null || true
wait "$server" 2>/dev/null || true
server=

{
    echo
    echo "== summary =="
    grep -E '^# |^connected|^call cycles|^frames|^LOST|^call setup|^latency|^CPU|^server \(|^calls in the database|^RESULT|^SOAK' "$out" || true
    [ -n "$verdict" ] && echo "$verdict"
    echo "server still running at the end: $server_alive; server log lines: $(wc -l <"$data/server.err") (warnings/errors: $(grep -ciE ' (warn|error) ' "$data/server.err" || true))"
    grep -iE ' (warn|error) ' "$data/server.err" | head -n 5 || true
    echo "exit status: $status"
} >"$data/summary.txt"
cat "$data/summary.txt"
cat "$data/summary.txt" >>"$out"
echo "full output: $out (server log: $out.server.log)"
exit "$status"
