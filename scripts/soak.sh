#!/usr/bin/env bash
# scripts/soak.sh: a bounded soak of port_exporter: a full 1-65535 range probed every 5 s for
# 120 s (about 1.6 million probes), inside a network namespace of its own; resident memory must
# grow less than 5 % after the warm-up (60 s: glibc's allocator settles in the first minute or
# so, by a few hundred KiB on an 18 MiB process).
#
# Usage (as root):
#   scripts/soak.sh [--bin PATH] [--duration SECONDS] [--warmup SECONDS] [--interval DURATION]
#     --bin PATH          the binary (default: `cargo build --release`, target/release/port_exporter)
#     --duration SECONDS  how long the exporter runs after it is ready (default 120)
#     --warmup SECONDS    RSS is compared from this point on (default 60)
#     --interval DURATION the range's interval (default 5s)
#     --min-probes N      the probe goal (default 1000000; the test suite's smoke run sets less)
#     --max-growth PCT    the RSS goal: peak growth below PCT % (default 5; the smoke run, 20 s
#                         of a debug build, sets 15: see tests/load.rs)
#
# Needs: root, ip (iproute2), curl, awk. Debian: apt-get install -y iproute2 curl gawk.
#
# What it does, in the namespace pe-soak-$$ (loopback only; nothing leaves the namespace):
#   one target, 127.0.0.1 ports 1-65535 (all closed but the exporter's own 9799), timeout 1s,
#   retries 0, expect not_open; the binary with its default flags. Every second it reads
#   VmRSS from /proc/PID/status and port_exporter_probes_total from /metrics. It prints the
#   probes done, the rate, the RSS at the end of the warm-up, at the end, its peak over the
#   warm-up and its peak after the warm-up, and the growth. The goal compares
#   peak with peak: a scrape that renders while an older rendering is still held lifts RSS for
#   a second (5 MiB at 65,535 pairs), and a single sample at the warm-up's end, taken between
#   two such moments, made that lift read as 15 % growth. A leak lifts every later peak.
#
# Exit status: 0 when the goals hold (>= --min-probes probes in the run, RSS growth after the
# warm-up < --max-growth, no probe in state error); 3 when a goal fails; 1 when a step fails. The
# exporter is stopped by PID and the namespace removed on every exit.
set -euo pipefail

BIN=""
DURATION=120
WARMUP=60
INTERVAL=5s
MIN_PROBES=1000000
MAX_GROWTH=5
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) BIN="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --warmup) WARMUP="$2"; shift 2 ;;
        --interval) INTERVAL="$2"; shift 2 ;;
        --min-probes) MIN_PROBES="$2"; shift 2 ;;
        --max-growth) MAX_GROWTH="$2"; shift 2 ;;
        -h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 1 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "soak.sh: needs root (network namespace)" >&2; exit 1; }
for tool in ip curl awk; do
    command -v "$tool" >/dev/null || { echo "soak.sh: needs $tool" >&2; exit 1; }
done
cd "$(dirname "$0")/.."
if [ -z "$BIN" ]; then
    cargo build --release --quiet
    BIN=target/release/port_exporter
fi
BIN=$(realpath "$BIN")

NS="pe-soak-$$"
WORK=$(mktemp -d)
PID=""
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "/etc/netns/$NS" "$WORK"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

ip netns add "$NS"
ip -n "$NS" link set lo up
mkdir -p "/etc/netns/$NS"
printf '127.0.0.1 localhost\n' >"/etc/netns/$NS/hosts"
printf 'nameserver 127.0.0.1\n' >"/etc/netns/$NS/resolv.conf"

cat >"$WORK/soak.toml" <<EOF
[[targets]]
name = "all"
host = "127.0.0.1"
ports = ["1-65535"]
interval = "$INTERVAL"
timeout = "1s"
retries = 0
expect = "not_open"
EOF

in_ns() { ip netns exec "$NS" "$@"; }
calc() { awk "BEGIN { print $* }"; }
metric() { # sum of a metric family's samples, or empty
    in_ns curl -s --max-time 5 http://127.0.0.1:9799/metrics |
        awk -v name="$1" 'index($0, name) == 1 { s += $NF; n++ } END { if (n) printf "%.0f\n", s }'
}
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$PID/status"; }

echo "binary:   $BIN ($("$BIN" --version 2>/dev/null || echo unknown version))"
echo "machine:  $(nproc) cores, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -r)"
echo "config:   127.0.0.1 ports 1-65535, interval $INTERVAL, timeout 1s, retries 0; run ${DURATION}s, warm-up ${WARMUP}s"

# Not through in_ns: a function in the background is a subshell, and $! would be its PID.
# `ip netns exec` execs the binary, so $! is the exporter's.
ip netns exec "$NS" "$BIN" --config.file "$WORK/soak.toml" --web.listen-address 127.0.0.1:9799 \
    >"$WORK/exporter.log" 2>&1 &
PID=$!
started=$(date +%s.%N)
sleep 0.2
[ "$(readlink "/proc/$PID/exe")" = "$BIN" ] || { echo "PID $PID is not the exporter" >&2; exit 1; }
for _ in $(seq 1 300); do
    code=$(in_ns curl -s -o /dev/null -w '%{http_code}' --max-time 2 http://127.0.0.1:9799/-/ready || true)
    [ "$code" = 200 ] && break
    kill -0 "$PID" 2>/dev/null || { echo "exporter exited:"; cat "$WORK/exporter.log"; exit 1; }
    sleep 0.1
done
[ "$code" = 200 ] || { echo "not ready after 30 s"; cat "$WORK/exporter.log"; exit 1; }
ready=$(date +%s.%N)
printf 'ready:    first round of 65535 probes in %.2f s\n' "$(calc "$ready - $started")"

probes_start=$(metric port_exporter_probes_total)
rss_start=$(rss_kib)
rss_warm=""
rss_max_warm=0
rss_max_after=0
printf '%6s %12s %10s\n' "t(s)" "probes" "VmRSS(KiB)" >"$WORK/samples.txt"
for t in $(seq 1 "$DURATION"); do
    sleep 1
    kill -0 "$PID" 2>/dev/null || { echo "exporter died at ${t}s:"; cat "$WORK/exporter.log"; exit 1; }
    probes=$(metric port_exporter_probes_total)
    rss=$(rss_kib)
    printf '%6d %12s %10s\n' "$t" "$probes" "$rss" >>"$WORK/samples.txt"
    if [ "$t" -eq "$WARMUP" ]; then rss_warm=$rss; fi
    if [ "$t" -le "$WARMUP" ] && [ "$rss" -gt "$rss_max_warm" ]; then rss_max_warm=$rss; fi
    if [ "$t" -ge "$WARMUP" ] && [ "$rss" -gt "$rss_max_after" ]; then rss_max_after=$rss; fi
done
probes_end=$(metric port_exporter_probes_total)
errors=$(metric 'port_exporter_probes_total{state="error"}')
lateness_sum=$(metric port_exporter_probe_start_lateness_seconds_sum)
lateness_count=$(metric port_exporter_probe_start_lateness_seconds_count)
rss_end=$(rss_kib)
cpu=$(awk '{ print ($14 + $15) / 100 }' "/proc/$PID/stat")
elapsed=$(calc "$(date +%s.%N) - $ready")

awk 'NR == 1 || (NR - 1) % 10 == 0' "$WORK/samples.txt"; [ -n "${SOAK_ALL_SAMPLES:-}" ] && cat "$WORK/samples.txt"
done_total=$probes_end
done_run=$((probes_end - probes_start))
growth=$(awk -v a="$rss_warm" -v b="$rss_end" 'BEGIN { printf "%.2f", (b - a) * 100 / a }')
growth_max=$(awk -v a="$rss_max_warm" -v b="$rss_max_after" 'BEGIN { printf "%.2f", (b - a) * 100 / a }')
echo
printf 'probes:   %d in all (%d since ready, %.0f/s); in state error: %s\n' \
    "$done_total" "$done_run" "$(calc "$done_run / $elapsed")" "${errors:-0}"
printf 'lateness: mean %.4f s over %s probe starts\n' "$(calc "$lateness_sum / $lateness_count")" "$lateness_count"
printf 'cpu:      %.1f s user+system in %.0f s (%.2f cores)\n' "$cpu" "$elapsed" "$(calc "$cpu / ($elapsed + $ready - $started)")"
printf 'VmRSS:    %d KiB at ready, %d KiB after the %ds warm-up, %d KiB at the end; peak %d KiB in the warm-up'"'"'s second half, %d KiB after the warm-up\n' \
    "$rss_start" "$rss_warm" "$WARMUP" "$rss_end" "$rss_max_warm" "$rss_max_after"
printf 'growth:   %s %% (end vs warm-up), %s %% (peak after the warm-up vs peak in the warm-up)\n' "$growth" "$growth_max"

status=0
if [ "$done_total" -lt "$MIN_PROBES" ]; then echo "GOAL FAILED: fewer than $MIN_PROBES probes"; status=3; fi
if awk -v g="$growth_max" -v m="$MAX_GROWTH" 'BEGIN { exit !(g >= m) }'; then echo "GOAL FAILED: RSS peak grew $MAX_GROWTH % or more"; status=3; fi
if [ "${errors:-0}" != 0 ]; then echo "GOAL FAILED: probes in state error"; status=3; fi
[ "$status" = 0 ] && echo "all goals met"
exit "$status"
