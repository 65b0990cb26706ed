#!/usr/bin/env bash
# signalbox-turn vs coturn under the same turnutils_uclient loads, back to back, on loopback.
# Run on demand (not in CI):  bash bench/turn/run.sh [--write]
#   --write  also writes the table to bench/turn/RESULTS.md
# Needs Debian's coturn package (turnserver 4.6.1, turnutils_uclient, turnutils_peer); builds
# the turn-bench-server example in release mode. Each load runs against a fresh server process;
# CPU seconds (utime+stime) and peak RSS (VmHWM) are read from /proc before the server stops.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
secret="bench-secret"
port=34790
peer_port=34791
threads=2
write=0
[ "${1:-}" = "--write" ] && write=1

for t in turnserver turnutils_uclient turnutils_peer; do
  command -v "$t" >/dev/null || { echo "missing $t: apt-get install coturn" >&2; exit 1; }
done

(cd "$repo" && CARGO_TARGET_DIR="$target" cargo build --release -q -p signalbox-turn --example turn-bench-server)
ours_bin="$target/release/examples/turn-bench-server"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

start_server() { # $1 = ours|coturn ; prints the pid
  case "$1" in
    ours)
      "$ours_bin" --listen "127.0.0.1:$port" --relay-ip 127.0.0.1 --relay-ports 50000-59999 \
        --secret "$secret" --allow-peer 127.0.0.0/8 --threads "$threads" \
        --user-quota 100000 --total-quota 100000 >"$work/server.log" 2>&1 &
      ;;
    coturn)
      turnserver -n --listening-ip=127.0.0.1 --listening-port="$port" --relay-ip=127.0.0.1 \
        --min-port=50000 --max-port=59999 --use-auth-secret --static-auth-secret="$secret" \
        --realm=signalbox --allow-loopback-peers --allowed-peer-ip=127.0.0.1 --no-tls --no-dtls \
        --no-cli --relay-threads="$threads" --no-stdout-log --log-file=/dev/null \
        --pidfile="$work/turnserver.pid" >"$work/server.log" 2>&1 &
      ;;
  esac
  echo $!
  sleep 1
}

stop_server() { # SIGTERM, then wait until the process is gone so the port is free again
  kill "$1" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
}

cpu_seconds() { # utime + stime of a pid, in seconds
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"
}
peak_rss_mb() {
  awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"
}

uclient() { # extra args...; prints "sent recv lost"
  timeout 300 turnutils_uclient -W "$secret" -u bench -p "$port" -e 127.0.0.1 -r "$peer_port" "$@" 127.0.0.1 \
    >"$work/uclient.$$.$RANDOM.log" 2>&1 || true
}

totals() { # sums sent/recv/lost over the uclient logs of the current load
  local sent=0 recv=0 lost=0 f s r l
  for f in "$work"/uclient.*.log; do
    s=$(grep -o 'tot_send_msgs=[0-9]*' "$f" | tail -1 | cut -d= -f2)
    r=$(grep -o 'tot_recv_msgs=[0-9]*' "$f" | tail -1 | cut -d= -f2)
    l=$(grep -o 'Total lost packets [0-9]*' "$f" | tail -1 | awk '{print $4}')
    sent=$((sent + ${s:-0})); recv=$((recv + ${r:-0})); lost=$((lost + ${l:-0}))
  done
  rm -f "$work"/uclient.*.log
  echo "$sent $recv $lost"
}

run_load() { # $1 = load name; prints "cpu rss sent recv lost"
  case "$1" in
    audio) uclient -m 100 -n 500 -l 200 -z 20 ;;
    stress)
      uclient -m 50 -n 3000 -l 200 -z 1 &
      local second=$!
      uclient -m 50 -n 3000 -l 200 -z 1
      wait "$second" || true
      ;;
    burst) uclient -m 10 -n 2000 -l 1000 -z 0 ;;
    tcp) uclient -t -m 100 -n 500 -l 200 -z 20 ;;
  esac
}

turnutils_peer -p "$peer_port" -L 127.0.0.1 >/dev/null 2>&1 &
peer_pid=$!
sleep 0.5

declare -A result
for load in ${LOADS:-audio stress burst tcp}; do
  for server in ours coturn; do
    pid=$(start_server "$server")
    kill -0 "$pid" 2>/dev/null || { echo "$server did not start:" >&2; cat "$work/server.log" >&2; exit 1; }
    run_load "$load"
    cpu=$(cpu_seconds "$pid"); rss=$(peak_rss_mb "$pid")
    stop_server "$pid"
    read -r sent recv lost < <(totals)
    result[$load.$server]="$cpu $rss $sent $recv $lost"
    echo "$load/$server: cpu=${cpu}s rss=${rss}MB sent=$sent recv=$recv lost=$lost" >&2
    sleep 1
  done
done
kill "$peer_pid" 2>/dev/null || true

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
{
  echo "| load | server | CPU s | peak RSS MB | sent | received | lost |"
  echo "|---|---|---:|---:|---:|---:|---:|"
  for load in ${LOADS:-audio stress burst tcp}; do
    for server in ours coturn; do
      read -r cpu rss sent recv lost <<<"${result[$load.$server]}"
      name=$([ "$server" = ours ] && echo signalbox-turn || echo "coturn $(turnserver --version 2>/dev/null | head -1)")
      echo "| $load | $name | $cpu | $rss | $sent | $recv | $lost |"
    done
  done
  echo
  echo "| load | CPU ratio (signalbox/coturn) | RSS ratio |"
  echo "|---|---:|---:|"
  for load in ${LOADS:-audio stress burst tcp}; do
    read -r c1 r1 _ <<<"${result[$load.ours]}"
    read -r c2 r2 _ <<<"${result[$load.coturn]}"
    echo "| $load | $(ratio "$c1" "$c2") | $(ratio "$r1" "$r2") |"
  done
} | tee "$work/table.md"

if [ "$write" = 1 ]; then
  {
    echo "# signalbox-turn vs coturn — turnutils_uclient loads"
    echo
    echo "Command: \`bash bench/turn/run.sh --write\` ($(date -u +%Y-%m-%d), $(nproc) cores, both servers with $threads relay threads,"
    echo "loopback, REST credentials, channels; loads: audio \`-m 100 -n 500 -l 200 -z 20\`; stress: two clients"
    echo "\`-m 50 -n 3000 -l 200 -z 1\` at once; burst \`-m 10 -n 2000 -l 1000 -z 0\`; tcp: audio with \`-t\`)."
    echo "CPU is the server's utime+stime for the load, RSS its VmHWM; each load starts a fresh server."
    echo
    cat "$work/table.md"
  } >"$here/RESULTS.md"
  echo "wrote $here/RESULTS.md" >&2
fi
