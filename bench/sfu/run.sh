#!/usr/bin/env bash
# SFU forwarding benchmark (run on demand; not part of the tests or CI).
#
#   bench/sfu/run.sh [--streams 100,200,300,400,500] [--subs-per-room 50] [--fps 30] [--frame-bytes 1250]
#                    [--warmup 3] [--secs 10] [--simulcast] [--only sfu|naive]
#
# Builds examples/sfu_bench.rs in release mode and runs it. For each stream count it starts the
# signalbox-sfu UDP server (the crate the signalbox binary embeds) in a child process on
# 127.0.0.1, joins rooms of one publisher and S subscribers (str0m sessions on loopback: ICE,
# DTLS-SRTP, VP8 at 1250 B x 30 fps = 300 kbit/s per stream), measures a window of delivered
# packets, loss and the SFU process's CPU time, then does the same with a naive UDP forwarder
# (receive a datagram, send it to each subscriber; no crypto) as the physical reference.
# Prints a table: loss, forwarder CPU, CPU us per forwarded packet, streams per core.
# --simulcast: publishers send three layers (q/h/f, ~100/300/900 kbit/s, 160/320/640 px) and the
# subscribers of each room show tiles of 150/300/600 px by thirds; a second table gives the
# bytes in and out, what forwarding every layer would have cost, and which layer each third got.
# Environment: CARGO_TARGET_DIR builds elsewhere; OUT=file keeps the full output (default: a temp
# file); SFU_CPUS / CLIENT_CPUS (e.g. 1 and 0) pin the forwarder and the load with taskset.
# The load (hundreds of str0m clients decrypting SRTP) shares the machine with the forwarder:
# the table's "other CPU" column (machine-wide busy time from /proc/stat minus both processes)
# flags a busy neighbour so the run can be repeated; it is tick-sampled and reads low for the
# bench's timer-aligned bursts, so 0% means "no heavy neighbour", not an exact figure.
set -euo pipefail
cd "$(dirname "$0")/../.."

target=${CARGO_TARGET_DIR:-target}
nice cargo build --release --example sfu_bench
bench_bin=$target/release/examples/sfu_bench

# Two sockets per participant in the load (hundreds of participants).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

out=${OUT:-$(mktemp /tmp/signalbox-sfu-bench.XXXXXX.txt)}
client_pin=() sfu_pin=()
[ -n "${CLIENT_CPUS:-}" ] && client_pin=(taskset -c "$CLIENT_CPUS")
[ -n "${SFU_CPUS:-}" ] && sfu_pin=(--sfu-cpus "$SFU_CPUS")

{
    echo "# signalbox SFU forwarding benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "# machine: $(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)), $(free -g | awk '/^Mem:/{print $2}') GiB, $(uname -sr)"
    echo "# commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- sfu 2>/dev/null || echo ' (sfu/ modified)')"
    echo "# bench: $bench_bin ${sfu_pin[*]} $*"
    echo "# pinning: forwarder ${SFU_CPUS:-none}, load ${CLIENT_CPUS:-none}; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$out"

status=0
timeout 1800 "${client_pin[@]}" "$bench_bin" "${sfu_pin[@]}" "$@" | tee -a "$out" || status=$?

echo
echo "== summary =="
sed -n '/^== SFU forwarding/,$p' "$out"
echo "full output: $out"
exit "$status"
