#!/usr/bin/env bash
# signalbox-turn vs coturn under the same turnutils_uclient loads, on loopback, in one run.
# Run on demand (not in CI):  bash bench/turn/run.sh [--reps N] [--loads "audio stress"] [--write]
#   --reps N   repetitions per load and server (default 3); the table gives min and median
#   --loads L  which loads (default "audio stress burst tcp"; the LOADS variable works too)
#   --write    also writes the table to bench/turn/RESULTS.md
# Needs Debian's coturn package (turnserver 4.6.1, turnutils_uclient, turnutils_peer); builds
# the turn-bench-server example in release mode in $CARGO_TARGET_DIR (default target/), or
# takes OURS_BIN=path (a build of another commit, to compare against the same coturn). Every
# repetition of a load runs against a fresh server process, signalbox and coturn taking turns
# (which goes first alternates), so both see the same machine. CPU seconds (the scheduler's
# per-thread run time, see cpu_seconds) and peak RSS (VmHWM) are read from /proc before the
# server stops; CPU per relayed packet divides by the datagrams the relay carried, as uclient
# counts them: sent (client -> peer) + received (the peer's echo -> client). Loss is
# uclient's "Total lost packets" over sent.
#
# Ports (listener 32700, turnutils_peer 32701 and 32702, relays 32000-32699) are below the
# kernel's ephemeral range (32768-60999 by default), so no port-0 socket
# (uclient's own) can take the listener's, the peer's or a relay port between runs.
set -uo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
secret="bench-secret"
port=32700
peer_port=32701
relay_min=32000
relay_max=32699
threads=2
write=0
reps=3
loads="${LOADS:-audio stress burst tcp}"

die() { echo "run.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --write) write=1 ;;
    --reps) reps="${2:-}"; shift ;;
    --loads) loads="${2:-}"; shift ;;
    *) die "unknown argument $1 (use --reps N, --loads \"...\", --write)" ;;
  esac
  shift
done
[[ "$reps" =~ ^[1-9][0-9]*$ ]] || die "--reps needs a positive number"

for t in turnserver turnutils_uclient turnutils_peer; do
  command -v "$t" >/dev/null || die "missing $t: apt-get install coturn"
done

if [ -n "${OURS_BIN:-}" ]; then
  ours_bin="$OURS_BIN"
else
  (cd "$repo" && CARGO_TARGET_DIR="$target" cargo build --release -q -p signalbox-turn --example turn-bench-server) ||
    die "build failed"
  ours_bin="$target/release/examples/turn-bench-server"
fi
[ -x "$ours_bin" ] || die "no $ours_bin"
work="$(mktemp -d)"
peer_pid=""
server_pid=""
cleanup() {
  for p in $server_pid $peer_pid; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

port_free() { # no UDP socket and no TCP listener on port $1
  ! ss -Hanu "sport = :$1" 2>/dev/null | grep -q . && ! ss -Hlnt "sport = :$1" 2>/dev/null | grep -q .
}

start_server() { # $1 = ours|coturn; sets server_pid, returns non-zero if it did not come up
  local i
  for i in $(seq 50); do port_free "$port" && break; sleep 0.1; done
  case "$1" in
    ours)
      "$ours_bin" --listen "127.0.0.1:$port" --relay-ip 127.0.0.1 --relay-ports "$relay_min-$relay_max" \
        --secret "$secret" --allow-peer 127.0.0.0/8 --threads "$threads" \
        --user-quota 100000 --total-quota 100000 >"$work/server.log" 2>&1 &
      ;;
    coturn)
      turnserver -n --listening-ip=127.0.0.1 --listening-port="$port" --relay-ip=127.0.0.1 \
        --min-port="$relay_min" --max-port="$relay_max" --use-auth-secret --static-auth-secret="$secret" \
        --realm=signalbox --allow-loopback-peers --allowed-peer-ip=127.0.0.1 --no-tls --no-dtls \
        --no-cli --relay-threads="$threads" --no-stdout-log --log-file=/dev/null \
        --pidfile="$work/turnserver.pid" >"$work/server.log" 2>&1 &
      ;;
  esac
  server_pid=$!
  sleep 1
  kill -0 "$server_pid" 2>/dev/null
}

stop_server() { # SIGTERM, then wait until the process is gone so the port is free again
  local pid="$server_pid"
  server_pid=""
  kill "$pid" 2>/dev/null
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  return 0
}

cpu_seconds() { # CPU seconds of a pid ("" if it is gone): the scheduler's nanoseconds summed
  # over its threads (/proc/PID/task/*/schedstat), or utime+stime (clock ticks, 10 ms) where
  # that is missing or smaller (a thread that exited is only in utime+stime)
  local ticks ns
  ticks=$(awk -v hz="$(getconf CLK_TCK)" '{ printf "%.3f", ($14 + $15) / hz }' "/proc/$1/stat" 2>/dev/null) || return 0
  [ -n "$ticks" ] || return 0
  ns=$(cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { if (NR) printf "%.0f", s }')
  awk -v t="$ticks" -v ns="${ns:-0}" 'BEGIN { s = ns / 1e9; if (s + 0.02 < t) s = t; printf "%.3f", s }'
}
peak_rss_mb() {
  awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null
}

uclient() { # extra args...; its log goes to its own file
  timeout 300 turnutils_uclient -W "$secret" -u bench -p "$port" -e 127.0.0.1 -r "$peer_port" "$@" 127.0.0.1 \
    >"$(mktemp "$work/uclient.XXXXXX.log")" 2>&1
  return 0
}

totals() { # sums sent/recv/lost over the uclient logs of the current load: "sent recv lost clients"
  # A log without its totals (uclient killed by the timeout, or an error before the run) counts
  # as a missing client, not as a failure of this script.
  local sent=0 recv=0 lost=0 ok=0 f s r l
  for f in "$work"/uclient.*.log; do
    [ -e "$f" ] || continue
    s=$(grep -o 'tot_send_msgs=[0-9]*' "$f" | tail -1 | cut -d= -f2)
    r=$(grep -o 'tot_recv_msgs=[0-9]*' "$f" | tail -1 | cut -d= -f2)
    l=$(grep -o 'Total lost packets [0-9]*' "$f" | tail -1 | awk '{print $4}')
    if [ -n "$s" ] && [ -n "$r" ] && [ -n "$l" ]; then
      sent=$((sent + s)); recv=$((recv + r)); lost=$((lost + l)); ok=$((ok + 1))
    else
      cp "$f" "$work/failed.$(basename "$f")"
    fi
  done
  rm -f "$work"/uclient.*.log
  echo "$sent $recv $lost $ok"
}

uclients_of() { case "$1" in stress) echo 2 ;; *) echo 1 ;; esac; }

run_load() { # $1 = load name
  case "$1" in
    audio) uclient -m 100 -n 500 -l 200 -z 20 ;;
    stress)
      uclient -m 50 -n 3000 -l 200 -z 1 &
      local second=$!
      uclient -m 50 -n 3000 -l 200 -z 1
      wait "$second"
      ;;
    burst) uclient -m 10 -n 2000 -l 1000 -z 0 ;;
    tcp) uclient -t -m 100 -n 500 -l 200 -z 20 ;;
    *) echo "unknown load $1" >&2 ;;
  esac
  return 0
}

turnutils_peer -p "$peer_port" -L 127.0.0.1 >/dev/null 2>&1 &
peer_pid=$!
sleep 0.5
kill -0 "$peer_pid" 2>/dev/null || die "turnutils_peer did not start on port $peer_port"

# One line per repetition: load server rep cpu rss sent recv lost
raw="$work/raw.txt"
: >"$raw"
for load in $loads; do
  for rep in $(seq "$reps"); do
    order="ours coturn"
    [ $((rep % 2)) = 0 ] && order="coturn ours"
    for server in $order; do
      if ! start_server "$server"; then
        echo "$load/$server rep $rep: the server did not start:" >&2
        cat "$work/server.log" >&2
        stop_server
        continue
      fi
      run_load "$load"
      cpu=$(cpu_seconds "$server_pid"); rss=$(peak_rss_mb "$server_pid")
      stop_server
      read -r sent recv lost ok <<<"$(totals)"
      if [ -z "$cpu" ] || [ "$ok" != "$(uclients_of "$load")" ]; then
        echo "$load/$server rep $rep: incomplete (server gone or $ok uclient totals); not counted" >&2
        for f in "$work"/failed.*; do [ -e "$f" ] && tail -5 "$f" >&2 && rm -f "$f"; done
        continue
      fi
      echo "$load $server $rep $cpu $rss $sent $recv $lost" >>"$raw"
      echo "$load/$server rep $rep: cpu=${cpu}s rss=${rss}MB sent=$sent recv=$recv lost=$lost" >&2
      sleep 1
    done
  done
done
kill "$peer_pid" 2>/dev/null
peer_pid=""

coturn_name="coturn $(turnserver --version 2>/dev/null | head -1)"
# Per load and server: reps, median packets, CPU us per packet min/median, loss % median/max,
# peak RSS median; then the ratios signalbox/coturn of the CPU min and median.
awk -v loads="$loads" -v coturn="$coturn_name" '
  function sort(a, n,   i, j, t) { for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t } }
  function median(a, n) { sort(a, n); return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2 }
  function minimum(a, n) { sort(a, n); return a[1] }
  function maximum(a, n) { sort(a, n); return a[n] }
  {
    k = $1 SUBSEP $2; n[k]++; i = n[k]
    pkts = $6 + $7
    us[k, i] = pkts > 0 ? $4 * 1e6 / pkts : 0
    loss[k, i] = $6 > 0 ? 100 * $8 / $6 : 0
    rss[k, i] = $5; pk[k, i] = pkts
  }
  END {
    print "| load | server | reps | packets relayed (median) | CPU µs/packet min | CPU µs/packet median | loss % median | loss % max | peak RSS MB (median) |"
    print "|---|---|---:|---:|---:|---:|---:|---:|---:|"
    nl = split(loads, L, " ")
    for (li = 1; li <= nl; li++) for (s = 1; s <= 2; s++) {
      srv = s == 1 ? "ours" : "coturn"; k = L[li] SUBSEP srv; m = n[k] + 0
      name = s == 1 ? "signalbox-turn" : coturn
      if (m == 0) { printf "| %s | %s | 0 | | | | | | |\n", L[li], name; continue }
      for (i = 1; i <= m; i++) { a[i] = us[k, i]; b[i] = loss[k, i]; c[i] = rss[k, i]; d[i] = pk[k, i] }
      cmin[k] = minimum(a, m); cmed[k] = median(a, m)
      lmed[k] = median(b, m); lmax[k] = maximum(b, m)
      printf "| %s | %s | %d | %d | %.2f | %.2f | %.3f | %.3f | %.1f |\n", L[li], name, m, median(d, m), cmin[k], cmed[k], lmed[k], lmax[k], median(c, m)
      delete a; delete b; delete c; delete d
    }
    print ""
    print "| load | CPU/packet ratio, min (signalbox/coturn) | ratio, median | loss % median, signalbox vs coturn |"
    print "|---|---:|---:|---|"
    for (li = 1; li <= nl; li++) {
      o = L[li] SUBSEP "ours"; c2 = L[li] SUBSEP "coturn"
      if (!(o in cmed) || !(c2 in cmed) || cmed[c2] == 0) { printf "| %s | n/a | n/a | n/a |\n", L[li]; continue }
      printf "| %s | %.2f | %.2f | %.3f vs %.3f |\n", L[li], cmin[o] / cmin[c2], cmed[o] / cmed[c2], lmed[o], lmed[c2]
    }
  }' "$raw" | tee "$work/table.md"

if [ "$write" = 1 ]; then
  {
    echo "# signalbox-turn vs coturn — turnutils_uclient loads"
    echo
    echo "Command: \`bash bench/turn/run.sh --reps $reps --write\` ($(date -u +%Y-%m-%d), commit $(git -C "$repo" rev-parse --short HEAD 2>/dev/null)${OURS_BIN:+, signalbox binary $OURS_BIN},"
    echo "$(nproc) cores, both servers with $threads relay threads, loopback, REST credentials, channels; loads: audio"
    echo "\`-m 100 -n 500 -l 200 -z 20\`; stress: two clients \`-m 50 -n 3000 -l 200 -z 1\` at once; burst"
    echo "\`-m 10 -n 2000 -l 1000 -z 0\`; tcp: audio with \`-t\`). Each repetition starts a fresh server; CPU is"
    echo "its threads' run time (schedstat) over the datagrams it relayed (uclient's sent + received), RSS its VmHWM."
    echo
    cat "$work/table.md"
  } >"$here/RESULTS.md"
  echo "wrote $here/RESULTS.md" >&2
fi
exit 0
