#!/usr/bin/env bash
# benches/run.sh: the performance benchmark of port_exporter, against its peers, in one run
# on one machine, inside a network namespace of its own.
#
# Usage (as root):
#   benches/run.sh [--smoke] [--rows LIST] [--out FILE] [--bin PATH]
#     --smoke     tiny sizes and 1-10 s durations (about a minute): checks the harness; g
#                 scans ports 1-900 and 8000-8100, h runs 2 rounds, i probes 2 x 2000 pairs
#                 every 6s with --probe.concurrency 8192, j runs 200 ports once each way,
#                 k probes 100 UDP ports (5 open, 10 dropped, 10 rejected).
#                 Goals are judged and reported, but only a failing step fails the script.
#     --out FILE  also write the report (machine, versions, commands, table, notes) to FILE.
#     --bin PATH  use this port_exporter binary instead of `cargo build --release`'s
#                 target/release/port_exporter (the smoke test passes the test build's binary).
#     --rows LIST run only these rows of section 2, letters a-k separated by commas (e.g.
#                 `--rows e,k`); default: every row. The build, tools, namespace and common
#                 listener always run, and so does the report, which names the rows that ran
#                 (rows not run are left out of its table). Rows that measure on another row's
#                 setup bring it along: d implies c (it measures c's exporter), f implies a
#                 and d (its figures are taken right after them), hence c; g, h and i share one
#                 setup (their addresses and listener), made when any of them runs.
#
# Needs: root, cargo (unless --bin), ip, iptables, ss (iproute2), curl, nmap, wrk,
# prometheus-blackbox-exporter, python3. Debian: apt-get install -y iproute2 iptables curl nmap
# wrk prometheus-blackbox-exporter python3.
#
# What it does, in the namespace pe-bench-$$ (loopback only; nothing leaves the namespace):
#   setup  one python3 accept-and-close listener serving every "open" port of the run.
#   a. /probe throughput: the same `wrk -t2 -c32 -d10s` against our /probe and against
#      blackbox_exporter's /probe (tcp_connect module, timeout 1s; ours: timeout 1s, retries 0),
#      both probing the same open port. wrk's socket errors and non-2xx are reported; that the
#      listener kept up is checked with its accept count (= probes) and the namespace's
#      TcpExtListenOverflows/ListenDrops. Goal: ours >= 3x blackbox's requests/s.
#   b. full range: one target 127.0.0.1 ports 1-65535 (expect closed, interval 1h, timeout 1s,
#      retries 0) with a few listeners and one iptables DROP port; the figure is the time from
#      starting the process to /-/ready answering 200 (= the first round done; polled every
#      10 ms; includes the process start, a few ms) vs the wall time of
#      `nmap -sT -Pn -n -T4 -p- 127.0.0.1`. The states must agree (our port_target_ports counts
#      and per-port series vs nmap's XML), or the row fails. A grid of --probe.concurrency and
#      --probe.rate is tried; the default and the best are reported. Goal: ours <= 0.5x nmap.
#   c. /metrics with 1,000 targets (127.1.x.y) x 100 listed ports (10000-10099, five of them
#      open) = 100,000 pairs, interval 60s: median curl time_total of 11 uncompressed and 11
#      gzip scrapes, and 8 concurrent scrapes (port_exporter_table_renders_total in their
#      bodies shows how many renderings they shared). Peer: none; as a baseline, the same
#      bytes served as a static file by `python3 -m http.server`. Goal: median < 250 ms.
#   d. the same exporter probing on schedule, 120 s window after a warm-up, no scrapes inside
#      the window: CPU (utime+stime of /proc/PID/stat, in cores), VmRSS per pair, and the p99 of
#      port_exporter_probe_start_lateness_seconds over the window (bucket interpolation like
#      histogram_quantile). Goals: <= 0.5 core, <= 2 KB/pair, p99 < 1 s.
#   e. 9,000 silent ports in flight (an fd limit of 20,000 fits 9,936 probes of two sockets): a target 20000-28999 (timing fixed, timeout 25s, retries 0, interval
#      30s, expect not_open) plus a target of 10 open ports (interval 1s), --probe.concurrency
#      12000. Baseline: VmRSS of the same process after its first round (the range answered
#      with resets: every row exists, nothing waits); then `iptables -I INPUT -p tcp --dport
#      20000:28999 -j DROP`, and once the next round has all 9,000 in flight
#      (port_exporter_probes_in_flight), VmRSS and in-flight samples every 0.5 s for 18 s.
#      Goals: extra RSS <= 20 MB; lateness p99 of the probes started meanwhile < 50 ms (the
#      lateness of the round that started the 9,000 is reported too).
#   f. TIME_WAIT: `ss -tan state time-wait` on the open port after our wrk run of (a) and after
#      the scheduled rounds of (d) (ours closes with a reset: goal 0), and after blackbox's.
#   Rows g-i use addresses of 198.18.0.0/15 on the namespace's lo (198.18.0.1, 198.18.2.1,
#   198.18.1.1-16; row k 198.18.3.1, with a UDP responder of its own) and a second listener
#   bound to those addresses only; each row adds its iptables rules (matching its own
#   addresses) and removes them after. Their configs set no timeout or retries: the
#   exporter's default timing is what they measure.
#   g. firewalled host: 198.18.0.1, where iptables drops every SYN but those to 80 and 443
#      (listeners: open) and 8080 (REJECT --reject-with tcp-reset: closed). One target, ports
#      1-65535, default config (interval 1h; expect filtered, which changes no timing, only
#      gives every open and closed range port its series). The figure is start to /-/ready 200
#      (timed like b) vs the wall time of `nmap -sT -T4 -Pn -n -p- 198.18.0.1`; the open and
#      closed sets and the per-state counts must be identical, or the row fails.
#      Goal: ours <= 0.5x nmap.
#   h. lossy path: 198.18.2.1 ports 21000-21099 open, 21100-21199 closed, and on those ports
#      `-m statistic --mode random --probability 0.2 -j DROP` both ways (a --dport rule drops
#      SYNs and the client's packets, a --sport rule the answers; the exporter's web port is
#      not touched). Ours: the 200 ports listed, default config, interval 5s, 12 rounds; every
#      probe's state is counted by port_exporter_probes_total, and since no port is truly
#      filtered its filtered count is the false filtered (read after the 12th round: count /
#      all probes). Round time: /metrics is polled every 0.1 s; when a round is done (probes
#      a multiple of 200, none in flight) the spread of port_last_probe_timestamp_seconds over
#      the 200 ports is its duration, and its port_state rows are checked against the truth.
#      nmap: `nmap -sT -T4 -Pn -n -p21000-21199 198.18.2.1` 12 times; its filtered ports per
#      run are its false filtered, its wall time its round time.
#      Goals: false filtered <= 0.1% of probes and <= nmap's.
#   i. 1M silent pairs: 16 targets 198.18.1.1-16 x ports 1-65535 (1-65534 a range, 65535
#      listed), every SYN dropped but those to 1, 80 and 443 (open); interval 5m, default
#      timing, --probe.concurrency 9000 --probe.rate 25000 (9,000 slots fit the fd limit of
#      20,000 at two sockets per probe; at 25,000 starts/s they are never all taken). From /-/ready
#      200 (the first round, timed like b) over one interval: CPU (utime+stime of
#      /proc/PID/stat, in cores), VmRSS at the end, the p99 of
#      port_exporter_probe_start_lateness_seconds (like d), and every round's duration: a
#      scrape every 30 s reads, per target, port_last_probe_timestamp_seconds of port 1 (open:
#      answered as its round starts) and of port 65535 (listed, silent: the last probe of a
#      round to finish), so that each round from its start to its end is seen (the scrapes'
#      CPU is in the figure: a few ms each). No peer: nmap has no scheduled rounds.
#      Goals: every round (the first one included) within the interval, <= 0.5 core,
#      <= 300 MB, lateness p99 < 1 s. Takes the first round plus one interval (~10 min).
#   j. service identification: 10,000 open ports 127.0.0.1:20000-29999 (e's range, its DROP
#      rule removed), served by a third python3 listener (one socket per port) that sends an
#      SSH identification line `SSH-2.0-bench\r\n` on accept and closes. One target of that
#      range (interval 1h, timeout 1s, retries 0, --help's defaults otherwise), run once with no
#      service (connect only) and once with service = "auto", a fresh process each,
#      alternating, 3 times each; medians. Figures: the first round's time from start to
#      /-/ready 200 (timed like b; probes/s = ports / that time) and the CPU-s (utime+stime of
#      /proc/PID/stat) at ready, auto vs connect-only. That the listener kept up is checked per
#      run with its accept count (>= ports) and the namespace's TcpExtListenOverflows and
#      ListenDrops (0); every port must read open, and under auto every port must have
#      port_service_info{service="ssh"}, or the row fails. No numeric goal: the issue asks
#      that identification not slow the connect-only path, and rows b-d (no service set) are
#      that guard; this row prices the exchange when it is asked for.
#   k. UDP, 1,000 ports on one host: 198.18.3.1 on the namespace's lo (no other row uses it),
#      ports 41000-41999: 10 answered by a python3 UDP responder bound to that address (any
#      datagram, the empty one included, gets a reply: open), 50 dropped (iptables DROP:
#      open|filtered), 50 rejected (REJECT --reject-with icmp-admin-prohibited: filtered), the
#      other 890 bound by nothing (ICMP port unreachable: closed); spread over the range. Its
#      rules sit in a chain of their own, jumped to for -d 198.18.3.1 -p udp, removed after the
#      row. Ours: one target, protocol = "udp", the 1,000 ports listed (each has its series),
#      interval 1h, default timing (no timeout or retries); the figure is start to /-/ready 200
#      (timed like b) vs the wall time of `nmap -sU -T4 -Pn -n -p41000-41999 198.18.3.1`. States
#      are compared port by port (ours: port_state{protocol="udp"} on /metrics; nmap's XML, its
#      open|filtered as ours open|filtered, its filtered as ours filtered): the row reports the
#      ports that differ (goal 0, and the note lists them) and the time ratio (no goal: the
#      issue sets no number). On lo the kernel does not rate-limit ICMP errors, so every closed
#      port answers every probe at once: a best case for both tools, unlike a remote host.
#
# Exit status: 0 when every step ran (and, in full mode, every goal passed); 1 when a step
# failed; 3 in full mode when a goal failed. Processes are stopped by PID and the namespace is
# deleted on exit, also on error or Ctrl-C.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODE=full
OUT=
BIN=
ROWS_ARG="" ROWS_GIVEN=""
while [ $# -gt 0 ]; do
    case "$1" in
    --smoke) MODE=smoke ;;
    --out) OUT=${2:?--out needs a file}; shift ;;
    --out=*) OUT=${1#--out=} ;;
    --bin) BIN=${2:?--bin needs a path}; shift ;;
    --bin=*) BIN=${1#--bin=} ;;
    --rows) ROWS_ARG=${2:?--rows needs a list, e.g. e,k}; ROWS_GIVEN=1; shift ;;
    --rows=*) ROWS_ARG=${1#--rows=} ROWS_GIVEN=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 1 ;;
    esac
    shift
done
if [ -n "$OUT" ]; then
    case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac
fi

# Rows to run (--rows): those asked for, plus the rows they measure on.
ALL_ROWS=(a b c d e f g h i j k)
declare -A RUN=()
if [ -z "$ROWS_GIVEN" ]; then
    for r in "${ALL_ROWS[@]}"; do RUN[$r]=1; done
else
    IFS=', ' read -r -a ASKED <<<"${ROWS_ARG,,}"
    [ ${#ASKED[@]} -gt 0 ] || { echo "--rows: no rows in '$ROWS_ARG' (rows: ${ALL_ROWS[*]})" >&2; exit 1; }
    for r in "${ASKED[@]}"; do
        [[ " ${ALL_ROWS[*]} " == *" $r "* ]] || { echo "--rows: unknown row '$r' (rows: ${ALL_ROWS[*]})" >&2; exit 1; }
        RUN[$r]=1
    done
fi
IMPLIED=()
if [ -n "${RUN[f]:-}" ]; then
    for r in a d; do [ -n "${RUN[$r]:-}" ] || { RUN[$r]=1; IMPLIED+=("$r (for f)"); }; done
fi
if [ -n "${RUN[d]:-}" ] && [ -z "${RUN[c]:-}" ]; then RUN[c]=1; IMPLIED+=("c (for d)"); fi
# Each row's section below is `if want X; then ... fi # X`, its body not indented (its
# heredocs are written as they are).
want() { [ -n "${RUN[$1]:-}" ]; }
RAN=() SKIPPED=()
for r in "${ALL_ROWS[@]}"; do
    if want "$r"; then RAN+=("$r"); else SKIPPED+=("$r"); fi
done
IMPLIED_TXT=""
if [ ${#IMPLIED[@]} -gt 0 ]; then IMPLIED_TXT=$(printf '%s, ' "${IMPLIED[@]}"); IMPLIED_TXT=${IMPLIED_TXT%, }; fi

# ---------------------------------------------------------------------------------------------
# Sizes per mode.
if [ "$MODE" = full ]; then
    WRK_ARGS=(-t2 -c32 -d10s --latency)
    WRK_WARMUP=(-t2 -c32 -d2s)
    RANGE_LO=1 RANGE_HI=65535
    NMAP_RUNS=3 OURS_RUNS=3
    C_TARGETS=1000 C_PORTS=100 C_INTERVAL=60s SCRAPES=11
    D_WARMUP=30 D_WINDOW=120
    E_LO=20000 E_HI=28999 E_TIMEOUT=25 E_INTERVAL=30 E_CONC=12000 E_BASE_SECS=5 E_WINDOW=18
    G_RANGES=("1-65535") G_NMAP_PORTS=- G_LIMIT=900
    H_ROUNDS=12 H_INTERVAL=5
    I_ADDRS=16 I_PORTS=65535 I_INTERVAL=300 I_CONC=9000 I_RATE=25000 I_EVERY=30
    J_LO=20000 J_HI=29999 J_RUNS=3
    K_PORTS=1000 K_OPEN_N=10 K_DROP_N=50 K_REJECT_N=50 K_LIMIT=600
else
    WRK_ARGS=(-t2 -c8 -d1s --latency)
    WRK_WARMUP=()
    RANGE_LO=1 RANGE_HI=10000
    NMAP_RUNS=1 OURS_RUNS=1
    C_TARGETS=10 C_PORTS=10 C_INTERVAL=5s SCRAPES=11
    D_WARMUP=1 D_WINDOW=2
    E_LO=20000 E_HI=20199 E_TIMEOUT=4 E_INTERVAL=5 E_CONC=400 E_BASE_SECS=1 E_WINDOW=2
    G_RANGES=("1-900" "8000-8100") G_NMAP_PORTS=1-900,8000-8100 G_LIMIT=120
    H_ROUNDS=2 H_INTERVAL=5
    I_ADDRS=2 I_PORTS=2000 I_INTERVAL=6 I_CONC=8192 I_RATE=25000 I_EVERY=2
    J_LO=20000 J_HI=20199 J_RUNS=1
    K_PORTS=100 K_OPEN_N=5 K_DROP_N=10 K_REJECT_N=10 K_LIMIT=300
fi
CONCURRENT=8
E_PORTS=$((E_HI - E_LO + 1))
PAIRS=$((C_TARGETS * C_PORTS))
OPEN_A=18080                          # (a): the open port both /probe endpoints probe
B_OPEN=(2222 8080 50000)              # (b): listeners seen by the range scan (50000 is ephemeral)
B_DROP=9999                           # (b): the filtered port
D_OPEN=(10000 10001 10002 10003 10004) # (c, d): open on every 127.1.x.y target
E_OPEN=(19000 19001 19002 19003 19004 19005 19006 19007 19008 19009)
G_ADDR=198.18.0.1                     # (g): the firewalled host
G_OPEN=(80 443) G_CLOSED=8080         # (g): its listeners, and its port answered with a reset
H_ADDR=198.18.2.1 H_LOSS=0.2          # (h): the lossy path
H_OPEN_LO=21000 H_OPEN_HI=21099 H_CLOSED_LO=21100 H_CLOSED_HI=21199
H_PORTS=$((H_CLOSED_HI - H_OPEN_LO + 1))
I_NET=198.18.1                        # (i): targets $I_NET.1 to $I_NET.$I_ADDRS
I_OPEN=(1 80 443)                     # (i): open on each; port 1 marks a round's start
I_PAIRS=$((I_ADDRS * I_PORTS))
J_PORTS=$((J_HI - J_LO + 1))          # (j): open ports on 127.0.0.1 (e's range; its DROP rule is gone)
J_BANNER=SSH-2.0-bench                # (j): what they send on accept, then close
K_ADDR=198.18.3.1 K_LO=41000          # (k): the UDP host, and the first of its K_PORTS ports
K_HI=$((K_LO + K_PORTS - 1))
K_CHAIN=PE-BENCH-K                    # (k): its iptables chain (jumped to for -d $K_ADDR -p udp)
OURS_ADDR=127.0.0.1:9799
BB_ADDR=127.0.0.1:9115
STATIC_ADDR=127.0.0.1:18099

NS=pe-bench-$$
TMP=
PIDS=()
CMDS=()
ROWS=()
NOTES=()
T_START=$(date +%s)

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null
    done
    sleep 0.2
    for pid in "${PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    if ip netns list 2>/dev/null | grep -qw "$NS"; then
        # Anything still inside our own namespace was started by this script.
        for pid in $(ip netns pids "$NS" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
        ip netns delete "$NS"
    fi
    [ -n "$TMP" ] && rm -rf "$TMP"
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 3 ]; then log "exit status $rc (namespace and processes cleaned up)"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

nsx() { ip netns exec "$NS" "$@"; }
# Records a command for the report (with the values of this run), then runs it.
cmd() {
    if [ "$1" = nsx ]; then CMDS+=("ip netns exec $NS ${*:2}"); else CMDS+=("$*"); fi
    "$@"
}
calc() { awk "BEGIN { printf \"%${2:-.3f}\", $1 }"; }
# pass/FAIL for "value op threshold"; n/a when the value is not a number.
judge() {
    local v=$1 op=$2 t=$3
    [[ "$v" =~ ^-?[0-9.]+(e[-+]?[0-9]+)?$ ]] || { echo "n/a"; return; }
    if awk "BEGIN { exit !($v $op $t) }"; then echo pass; else echo FAIL; fi
}
row() { ROWS+=("| $1 | $2 | $3 | $4 | $5 | $6 |"); }
note() { NOTES+=("$*"); }

# Starts a process inside the namespace in the background; its PID goes to the variable $1.
spawn() {
    local _var=$1 _logf=$2
    shift 2
    CMDS+=("ip netns exec $NS $*")
    # A simple command, not the nsx function: `ip netns exec` execs, so $! is the process itself.
    ip netns exec "$NS" "$@" >"$_logf" 2>&1 </dev/null &
    local _pid=$!
    PIDS+=("$_pid")
    printf -v "$_var" '%s' "$_pid"
}
# Stops a process we started (SIGTERM, then SIGKILL after 10 s).
stop() {
    local _pid=$1 _i _p
    kill -TERM "$_pid" 2>/dev/null || true
    for _i in $(seq 100); do
        kill -0 "$_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$_pid" 2>/dev/null || true
    wait "$_pid" 2>/dev/null || true
    local _kept=()
    for _p in "${PIDS[@]}"; do [ "$_p" = "$_pid" ] || _kept+=("$_p"); done
    PIDS=("${_kept[@]}")
}
# Polls URL (inside the namespace) until it answers 200, at most $2 seconds.
wait_http() {
    local url=$1 limit=${2:-30} i
    for i in $(seq $((limit * 10))); do
        [ "$(nsx curl -s -m 2 -o /dev/null -w '%{http_code}' "$url" || true)" = 200 ] && return 0
        sleep 0.1
    done
    return 1
}
fetch() { nsx curl -sf -m 60 "$1"; }
py() { python3 "$TMP/bench.py" "$@"; }
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
ss_tw() { nsx ss -Htan state time-wait "$@" | wc -l; }
in_flight() { nsx curl -sf -m 5 "http://$OURS_ADDR/metrics" | awk '/^port_exporter_probes_in_flight / { print $2 }'; }
ms_or() { # ms_or QUANTILE: the quantile in ms, or as it is (">5", "n/a")
    if [[ "$1" =~ ^[0-9.]+$ ]]; then calc "$1 * 1000" .2f; else echo "$1"; fi
}
start_ours() { # start_ours VAR CONFIG LOG [flags...]
    local var=$1 conf=$2 logf=$3
    shift 3
    spawn "$var" "$logf" "$BIN" --config.file "$conf" --web.listen-address "$OURS_ADDR" "$@"
    wait_http "http://$OURS_ADDR/-/healthy" 30 || die "our exporter did not start: $(tail -5 "$logf")"
}

# Starts our exporter through bench.py's launcher, which times it from the exec (not from
# python's start) to the first 200 of /-/ready, i.e. the first round; waits for that, at most
# LIMIT s. Logs and result in $TMP/NAME.*; sets L_PID L_UP L_TIME L_CPU (CPU-s at ready) and
# L_LAUNCHER.
launch_timed() { # launch_timed NAME CONFIG LIMIT [flags...]
    local name=$1 conf=$2 limit=$3 i
    local res="$TMP/$name.result"
    shift 3
    spawn L_LAUNCHER "$TMP/$name.launcher.log" python3 "$TMP/bench.py" launch-ready "$res" "$TMP/$name.log" \
        "http://$OURS_ADDR" "$limit" "$BIN" --config.file "$conf" --web.listen-address "$OURS_ADDR" "$@"
    for i in $(seq $((limit * 10 + 100))); do
        [ -s "$res" ] && break
        kill -0 "$L_LAUNCHER" 2>/dev/null || break
        sleep 0.1
    done
    [ -s "$res" ] || die "$name: no result: $(cat "$TMP/$name.launcher.log" "$TMP/$name.log" 2>/dev/null | tail -5)"
    read -r L_PID L_UP L_TIME L_CPU <"$res" || true # no trailing newline
    PIDS+=("$L_PID")
    [ "$L_UP" != not-ready ] || { kill "$L_PID"; die "$name: not ready within $limit s: $(tail -3 "$TMP/$name.log")"; }
}
# Stops what launch_timed started last.
stop_timed() {
    local i
    kill -TERM "$L_PID" 2>/dev/null || true
    for i in $(seq 100); do kill -0 "$L_LAUNCHER" 2>/dev/null && sleep 0.1 || break; done
    stop "$L_LAUNCHER"
    stop "$L_PID"
}

# ---------------------------------------------------------------------------------------------
# 1. Build, tools, namespace.
[ "$(id -u)" = 0 ] || die "needs root (network namespaces, iptables)"
for tool in ip iptables ss curl nmap wrk prometheus-blackbox-exporter python3 awk; do
    command -v "$tool" >/dev/null || die "needs $tool on PATH (Debian: apt-get install -y iproute2 iptables curl nmap wrk prometheus-blackbox-exporter python3)"
done
if [ -z "$BIN" ]; then
    log "building: cargo build --release"
    CMDS+=("cargo build --release")
    (cd "$ROOT" && cargo build --release -q) || die "cargo build --release"
    BIN=$ROOT/target/release/port_exporter
fi
[ -x "$BIN" ] || die "no executable $BIN"
log "rows: ${RAN[*]}$([ -z "$IMPLIED_TXT" ] || echo " (implied: $IMPLIED_TXT)")$([ ${#SKIPPED[@]} = 0 ] || echo "; not run: ${SKIPPED[*]}")"
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")

TMP=$(mktemp -d /tmp/pe-bench.XXXXXX)
CLK=$(getconf CLK_TCK)
cmd ip netns add "$NS"
cmd nsx ip link set lo up

# The defaults of the binary under test (README and code may move; --help is the truth).
HELP=$("$BIN" --help) || die "$BIN --help failed"
DEF_CONC=$(echo "$HELP" | awk '/--probe.concurrency/ { f = 1 } f && /default:/ { match($0, /default: [0-9]+/); print substr($0, RSTART + 9, RLENGTH - 9); exit }')
DEF_RATE=$(echo "$HELP" | awk '/--probe.rate/ { f = 1 } f && /default:/ { match($0, /default: [0-9]+/); print substr($0, RSTART + 9, RLENGTH - 9); exit }')
[ -n "$DEF_CONC" ] && [ -n "$DEF_RATE" ] || die "cannot read the --probe.* defaults from --help"

cat >"$TMP/bench.py" <<'PY'
"""Small helpers of benches/run.sh: a fast accept loop, parsers, percentiles."""
import json, os, re, selectors, signal, socket, statistics, sys, time, urllib.request
import xml.etree.ElementTree as ET

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def samples(text):
    for line in text.splitlines():
        if not line or line[0] == '#':
            continue
        m = SAMPLE.match(line)
        if m:
            yield m.group(1), dict(LABEL.findall(m.group(2) or '')), float(m.group(3))


def total(text, name, **want):
    return sum(v for n, l, v in samples(text) if n == name and all(l.get(k) == w for k, w in want.items()))


def serve(status, sel, take, answer, errors_too=False):
    """Until SIGTERM: for each socket of `sel` that is ready, takes what waits on it (`take(s)`,
    until BlockingIOError; an OSError skips one) and answers it (`answer(s, got)`, False for an
    error), counting them; writes the count (and the errors, `errors_too`) to `status` every
    0.2 s and at the end. The loop of listen, listen_banner and udp_answer."""
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    count, errors, last = 0, 0, 0.0

    def write():
        with open(status + '.tmp', 'w') as f:
            f.write(f'{count} {errors}' if errors_too else str(count))
        os.replace(status + '.tmp', status)

    write()
    while not stop:
        for key, _ in sel.select(0.2):
            s = key.fileobj
            while True:
                try:
                    got = take(s)
                except BlockingIOError:
                    break
                except OSError:
                    continue
                if not answer(s, got):
                    errors += 1
                count += 1
        now = time.monotonic()
        if now - last >= 0.2:
            write()
            last = now
    write()


def listen(status, *ports):
    """Accepts and closes connections on every port (PORT: every address; ADDR:PORT: that one)
    as fast as it can; counts them."""
    sel = selectors.DefaultSelector()
    for p in ports:
        addr, _, port = p.rpartition(':')
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr or '0.0.0.0', int(port)))
        s.listen(65535)  # capped by net.core.somaxconn
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    serve(status, sel, lambda s: s.accept()[0], lambda s, c: c.close() or True)


def listen_banner(status, addr, lo, hi, banner):
    """(j) Listens on addr:lo-hi; on each accept sends `banner` (\\r\\n appended) and closes,
    as fast as it can; counts them (like listen). Raises its own file limit to fit the ports."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = int(hi) - int(lo) + 1 + 256
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard) if hard != resource.RLIM_INFINITY else need, hard))
    data = banner.encode() + b'\r\n'
    sel = selectors.DefaultSelector()
    for port in range(int(lo), int(hi) + 1):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, port))
        s.listen(4096)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)

    def greet(_, c):
        try:
            c.send(data)  # a fresh socket's buffer takes it at once
            return True
        except OSError:
            return False
        finally:
            c.close()

    serve(status, sel, lambda s: s.accept()[0], greet, errors_too=True)


def launch_ready(result, log, url_base, limit, *cmd):
    """Starts cmd, then polls /-/healthy and /-/ready every 10 ms; writes its PID and the
    seconds from the start to the first 200 of each to `result`, then stays its parent until
    it exits (so it is reaped)."""
    import subprocess
    with open(log, 'w') as f:
        t0 = time.time()
        p = subprocess.Popen(cmd, stdout=f, stderr=f, stdin=subprocess.DEVNULL)
    with open(result + '.pid', 'w') as f:
        f.write(str(p.pid))
    import io, contextlib
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            wait_ready(url_base, t0, limit)
        with open(f'/proc/{p.pid}/stat') as f:
            fields = f.read().rsplit(')', 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')
        line = f'{p.pid} {out.getvalue().strip()} {cpu:.2f}'
    except SystemExit:
        line = f'{p.pid} not-ready'
    with open(result + '.tmp', 'w') as f:
        f.write(line)
    os.replace(result + '.tmp', result)
    sys.exit(p.wait())


def wait_ready(url_base, t0, limit):
    """Polls /-/healthy then /-/ready every 10 ms; prints seconds since t0 for both."""
    t0, limit = float(t0), float(limit)
    up = None
    while time.time() - t0 < limit:
        for path in (['/-/healthy'] if up is None else []) + ['/-/ready']:
            try:
                with urllib.request.urlopen(url_base + path, timeout=2) as r:
                    code = r.status
            except urllib.error.HTTPError as e:
                code = e.code
            except OSError:
                code = 0
            now = time.time()
            if path == '/-/healthy' and code == 200:
                up = now - t0
            if path == '/-/ready' and code == 200:
                print(f'{up if up is not None else now - t0:.4f} {now - t0:.4f}')
                return
        time.sleep(0.01)
    sys.exit('not ready within %s s' % limit)


def wrk(path):
    """wrk's output as key=value: rps, requests, errors, non2xx, p50_ms, p99_ms."""
    text = open(path).read()
    unit = {'us': 1e-3, 'ms': 1.0, 's': 1e3, 'm': 6e4}

    def ms(s):
        m = re.match(r'([0-9.]+)(us|ms|s|m)$', s)
        return float(m.group(1)) * unit[m.group(2)]
    out = {'rps': float(re.search(r'Requests/sec:\s+([0-9.]+)', text).group(1)),
           'requests': int(re.search(r'(\d+) requests in', text).group(1))}
    m = re.search(r'Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)', text)
    out['errors'] = sum(map(int, m.groups())) if m else 0
    m = re.search(r'Non-2xx or 3xx responses: (\d+)', text)
    out['non2xx'] = int(m.group(1)) if m else 0
    for q in ('50', '99'):
        m = re.search(r'^\s+%s%%\s+(\S+)' % q, text, re.M)
        out['p%s_ms' % q] = round(ms(m.group(1)), 3) if m else 'n/a'
    print(' '.join(f'{k}={v}' for k, v in out.items()))


def netstat():
    """TcpExt ListenOverflows + ListenDrops of the caller's namespace."""
    lines = [l.split() for l in open('/proc/net/netstat') if l.startswith('TcpExt:')]
    d = dict(zip(lines[0][1:], map(int, lines[1][1:])))
    print(d.get('ListenOverflows', 0) + d.get('ListenDrops', 0))


def metric(path, name, *labels):
    text = open(path).read()
    want = dict(l.split('=', 1) for l in labels)
    print(repr(total(text, name, **want)) if any(n == name for n, _, _ in samples(text)) else 'n/a')


def quantile(before, after, name, q):
    """histogram_quantile(q) of the increase of histogram `name` between two scrapes."""
    def buckets(path):
        return {l['le']: v for n, l, v in samples(open(path).read()) if n == name + '_bucket'}
    b, a = buckets(before), buckets(after)
    les = sorted(a, key=lambda le: float(le))
    delta = [(float(le), a[le] - b.get(le, 0.0)) for le in les]
    count = delta[-1][1]
    if count <= 0:
        print('n/a 0')
        return
    rank = float(q) * count
    prev_le, prev_c = 0.0, 0.0
    for le, c in delta:
        if c >= rank:
            if le == float('inf'):  # like Prometheus: the highest finite bound
                print(f'>{prev_le:g} {int(count)}')
                return
            v = prev_le + (le - prev_le) * ((rank - prev_c) / (c - prev_c) if c > prev_c else 1)
            print(f'{v:.6f} {int(count)}')
            return
        prev_le, prev_c = le, c


def states_ours(path, target):
    text = open(path).read()
    counts, ports = {}, {}
    for n, l, v in samples(text):
        if l.get('target') != target:
            continue
        if n == 'port_target_ports':
            counts[l['state']] = counts.get(l['state'], 0) + int(v)
        elif n == 'port_state' and v == 1:
            ports[int(l['port'])] = l['state']
    return counts, ports


def states_nmap(path):
    root = ET.parse(path).getroot()
    counts, ports = {}, {}
    for host in root.iter('host'):
        for ep in host.iter('extraports'):
            counts[ep.get('state')] = counts.get(ep.get('state'), 0) + int(ep.get('count'))
        for p in host.iter('port'):
            st = p.find('state').get('state')
            ports[int(p.get('portid'))] = st
            counts[st] = counts.get(st, 0) + 1
    elapsed = root.find('runstats/finished').get('elapsed')
    return counts, ports, elapsed


def compare(ours, nmap, target, sets='open,filtered'):
    """Whether our states of the range agree with nmap's: the counts per state, and the ports
    of each state in `sets` (states whose ports both list one by one); prints agree|DISAGREE
    and details."""
    oc, op = states_ours(ours, target)
    nc, np_, _ = states_nmap(nmap)
    oc = {k: v for k, v in oc.items() if v}
    problems = []
    if oc != nc:
        problems.append(f'counts ours {oc} nmap {nc}')
    for state in sets.split(','):
        o = sorted(p for p, s in op.items() if s == state)
        n = sorted(p for p, s in np_.items() if s == state)
        if o != n:
            problems.append(f'{state} ours {o[:20]} nmap {n[:20]}')
    summary = ' '.join(f'{k}={oc.get(k, 0)}' for k in ('open', 'closed', 'filtered', 'error'))
    print(('agree ' if not problems else 'DISAGREE ') + summary + ('; ' + '; '.join(problems) if problems else ''))


def nmap_summary(path):
    counts = states_nmap(path)[0]
    print(' '.join(f'{k}={counts.get(k, 0)}' for k in ('open', 'closed', 'filtered')))


def nmap_elapsed(path):
    print(states_nmap(path)[2])


def nmap_filtered(*paths):
    """(h) Over nmap runs: ports read filtered, ports scanned."""
    filtered = scanned = 0
    for path in paths:
        counts = states_nmap(path)[0]
        filtered += counts.get('filtered', 0)
        scanned += sum(counts.values())
    print(filtered, scanned)


def lossy_rounds(url, target, rounds, limit, open_lo, open_hi, closed_lo, closed_hi):
    """(h) Polls /metrics every 0.1 s until `rounds` rounds of the target's probes are done (or
    `limit` s). A round is seen done when port_exporter_probes_total is a multiple of the port
    count with none in flight (rounds of one target never overlap); from that scrape, its
    duration (the spread of the ports' port_last_probe_timestamp_seconds: every port was probed
    in it), ports read filtered, and ports read in a wrong state other than filtered. Ends once
    the probes reach rounds x ports; prints JSON: rounds seen, rounds with no idle moment seen,
    probes by state at the end, seconds polled."""
    truth = {p: 'open' for p in range(int(open_lo), int(open_hi) + 1)}
    truth.update({p: 'closed' for p in range(int(closed_lo), int(closed_hi) + 1)})
    n, rounds = len(truth), int(rounds)
    seen, missed, by_state = [], 0, {}
    last_k = 0
    t0 = time.time()
    while time.time() - t0 < float(limit):
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                text = r.read().decode()
        except OSError:
            time.sleep(0.1)
            continue
        got = list(samples(text))
        by_state = {l['state']: v for m, l, v in got if m == 'port_exporter_probes_total'}
        probes = sum(by_state.values())
        in_flight = sum(v for m, _, v in got if m == 'port_exporter_probes_in_flight')
        k = int(probes // n)
        if k > last_k and probes == k * n and in_flight == 0:
            missed += k - last_k - 1
            last_k = k
            ts, st = {}, {}
            for m, l, v in got:
                if l.get('target') != target or int(l.get('port', 0)) not in truth:
                    continue
                if m == 'port_last_probe_timestamp_seconds':
                    ts[int(l['port'])] = v
                elif m == 'port_state' and v == 1:
                    st[int(l['port'])] = l['state']
            seen.append({'round': k, 'seconds': round(max(ts.values()) - min(ts.values()), 3),
                         'filtered': sum(1 for s in st.values() if s == 'filtered'),
                         'wrong': sum(1 for p, s in st.items() if s not in (truth[p], 'filtered')),
                         'ports': len(st)})
        if probes >= rounds * n:
            missed += max(0, rounds - last_k)
            break
        time.sleep(0.1)
    json.dump({'rounds': seen, 'missed': missed, 'probes': by_state,
               'polled': round(time.time() - t0, 1)}, sys.stdout)


def lossy_summary(path):
    """(h) From lossy_rounds' JSON: false filtered, probes, median and max round seconds,
    rounds seen, rounds missed, filtered in the per-round scrapes, wrong states seen."""
    d = json.load(open(path))
    secs = sorted(r['seconds'] for r in d['rounds'])
    med = f'{statistics.median(secs):.2f}' if secs else 'n/a'
    top = f'{secs[-1]:.2f}' if secs else 'n/a'
    print(int(d['probes'].get('filtered', 0)), int(sum(d['probes'].values())), med, top,
          len(d['rounds']), d['missed'], sum(r['filtered'] for r in d['rounds']),
          sum(r['wrong'] for r in d['rounds']))


def silent_samples(url, seconds, every, first_port, last_port):
    """(i) Every `every` s for `seconds` s (and once at the end): per target, the
    port_last_probe_timestamp_seconds of first_port and last_port, probes finished and in
    flight. Prints JSON."""
    end = time.time() + float(seconds)
    first, last = str(first_port), str(last_port)
    out = []
    while True:
        t = time.time()
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                text = r.read().decode()
        except OSError:
            text = ''
        ts = {}
        for m, l, v in samples(text):
            if m == 'port_last_probe_timestamp_seconds' and l.get('port') in (first, last):
                ts.setdefault(l['target'], [None, None])[0 if l['port'] == first else 1] = v
        out.append({'t': round(t, 3), 'ts': ts,
                    'probes': total(text, 'port_exporter_probes_total'),
                    'in_flight': total(text, 'port_exporter_probes_in_flight')})
        if t >= end:
            break
        time.sleep(max(0.0, min(float(every) - (time.time() - t), end - time.time())))
    json.dump(out, sys.stdout)


def round_spans(path):
    """(i) From silent_samples' JSON: each target's rounds, from the first port's timestamp (its
    start) to the first last-port timestamp after it (its end). Prints: rounds seen complete,
    the longest (s), rounds still running at the last sample, the oldest of those (s), rounds
    whose end was never sampled (the next began first), the most in flight seen, targets, and
    every complete round's seconds (sorted, comma-separated)."""
    data = json.load(open(path))
    starts, ends = {}, {}
    for s in data:
        for target, (a, b) in s['ts'].items():
            if a is not None:
                starts.setdefault(target, set()).add(a)
            if b is not None:
                ends.setdefault(target, set()).add(b)
    last_t = data[-1]['t'] if data else 0
    complete, running, unseen = [], [], 0
    for target, st in starts.items():
        st = sorted(st)
        en = sorted(ends.get(target, ()))
        for i, a in enumerate(st):
            after = [b for b in en if b >= a]
            nxt = st[i + 1] if i + 1 < len(st) else None
            if after and (nxt is None or after[0] <= nxt):
                complete.append(after[0] - a)
            elif nxt is None:
                running.append(last_t - a)
            else:
                unseen += 1
    most = max((s['in_flight'] for s in data), default=0)
    print(len(complete), f'{max(complete):.1f}' if complete else 'n/a', len(running),
          f'{max(running):.1f}' if running else '0', unseen, int(most), len(starts),
          ','.join(f'{c:.1f}' for c in sorted(complete)) or 'none')


def sample(pid, url, seconds, every):
    """Every `every` s for `seconds` s: in-flight probes (from /metrics) and VmRSS (kB)."""
    end = time.time() + float(seconds)
    out = []
    while time.time() < end:
        t = time.time()
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                text = r.read().decode()
            inflight = total(text, 'port_exporter_probes_in_flight')
        except OSError:
            inflight = -1
        rss = int(next(l.split()[1] for l in open(f'/proc/{pid}/status') if l.startswith('VmRSS:')))
        out.append((round(t, 2), int(inflight), rss))
        time.sleep(max(0.0, float(every) - (time.time() - t)))
    json.dump(out, sys.stdout)


def inflight_rss(path, ports, frac):
    """From sample's JSON: max in flight, max RSS among samples with >= frac*ports in flight."""
    data = json.load(open(path))
    most = max(i for _, i, _ in data)
    busy = [r for _, i, r in data if i >= float(frac) * int(ports)]
    print(most, max(busy) if busy else 'n/a', len(busy), len(data))


def median_rss(path):
    data = json.load(open(path))
    print(int(statistics.median(r for _, _, r in data)), max(i for _, i, _ in data))


def stats(*values):
    """median min max of numbers."""
    v = sorted(float(x) for x in values)
    print(f'{statistics.median(v):.4f} {v[0]:.4f} {v[-1]:.4f}')


def udp_answer(status, addr, *ports):
    """(k) A UDP socket bound to addr:port for each port; answers every datagram, the empty one
    included, with a short one; counts the datagrams answered (like listen)."""
    sel = selectors.DefaultSelector()
    for port in ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((addr, int(port)))
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)

    def reply(s, peer):
        try:
            s.sendto(b'port_exporter bench\n', peer)
        except OSError:
            pass
        return True

    serve(status, sel, lambda s: s.recvfrom(65535)[1], reply)


def nmap_every_port(path, lo, hi):
    """(k) Every port's state in nmap's XML: the listed ones, and the folded ones (<extraports>)
    from their <extrareasons ports="..."> lists (nmap 7.80 and later); without those lists, if
    one state is folded, every unlisted port of lo-hi is in it."""
    root = ET.parse(path).getroot()
    ports, folded = {}, set()
    for host in root.iter('host'):
        for p in host.iter('port'):
            ports[int(p.get('portid'))] = p.find('state').get('state')
        for ep in host.iter('extraports'):
            folded.add(ep.get('state'))
            for er in ep.iter('extrareasons'):
                for part in filter(None, (er.get('ports') or '').split(',')):
                    a, _, b = part.rpartition(':')[2].partition('-')
                    for x in range(int(a), int(b or a) + 1):
                        ports.setdefault(x, ep.get('state'))
    if len(folded) == 1:
        for x in range(int(lo), int(hi) + 1):
            ports.setdefault(x, next(iter(folded)))
    return ports


UDP_STATES = ('open', 'open|filtered', 'filtered', 'closed', 'error')


def udp_compare(ours_path, nmap_path, target, lo, hi, opened, dropped, rejected):
    """(k) Our port_state (protocol="udp") of each port of lo-hi vs nmap -sU's, and both vs the
    setup (opened: answered, dropped: open|filtered, rejected: filtered, the rest closed).
    Prints five lines: ports differing from nmap, ours unlike the setup, nmap's unlike the
    setup, ports without our state, without nmap's; our counts per state; nmap's (both with
    `|` escaped for a markdown table); the differing ports (or none); the ports unlike the
    setup. A port without a state reads `missing`."""
    lo, hi = int(lo), int(hi)
    truth = {p: 'closed' for p in range(lo, hi + 1)}
    for csv, state in ((opened, 'open'), (dropped, 'open|filtered'), (rejected, 'filtered')):
        truth.update({int(p): state for p in csv.split(',') if p})
    ours = {}
    for n, l, v in samples(open(ours_path).read()):
        if n == 'port_state' and v == 1 and l.get('target') == target and l.get('protocol') == 'udp':
            ours[int(l['port'])] = l['state']
    nmap = nmap_every_port(nmap_path, lo, hi)
    rng = range(lo, hi + 1)
    differ = [p for p in rng if ours.get(p) != nmap.get(p)]
    ours_wrong = [p for p in rng if ours.get(p) != truth[p]]
    nmap_wrong = [p for p in rng if nmap.get(p) != truth[p]]

    def counts(states):
        c = {}
        for p in rng:
            c[states.get(p, 'missing')] = c.get(states.get(p, 'missing'), 0) + 1
        keys = [k for k in UDP_STATES if k in c] + sorted(k for k in c if k not in UDP_STATES)
        return ', '.join(f'{k} {c[k]}' for k in keys).replace('|', '\\|')

    def listing(ports, *columns, most=40):
        if not ports:
            return 'none'
        text = '; '.join(f'{p}: ' + ', '.join(f'{name} {states.get(p, "missing")}' for name, states in columns)
                         for p in ports[:most])
        return text + (f'; and {len(ports) - most} more' if len(ports) > most else '')

    print(len(differ), len(ours_wrong), len(nmap_wrong), sum(1 for p in rng if p not in ours),
          sum(1 for p in rng if p not in nmap))
    print(counts(ours))
    print(counts(nmap))
    print(listing(differ, ('ours', ours), ('nmap', nmap), ('set up', truth)))
    wrong = sorted(set(ours_wrong) | set(nmap_wrong))
    print(listing(wrong, ('set up', truth), ('ours', ours), ('nmap', nmap)))


def icmp(*names):
    """The caller's namespace's ICMP counters (/proc/net/snmp) of these names, n/a if absent."""
    lines = [l.split() for l in open('/proc/net/snmp') if l.startswith('Icmp:')]
    d = dict(zip(lines[0][1:], lines[1][1:]))
    print(' '.join(d.get(n, 'n/a') for n in names))


def config_many(path, targets, ports, interval):
    """(c, d): `targets` targets on 127.1.x.y, each with `ports` listed ports from 10000."""
    plist = ', '.join(str(10000 + i) for i in range(int(ports)))
    with open(path, 'w') as f:
        f.write(f'[defaults]\ninterval = "{interval}"\ntimeout = "1s"\nretries = 1\nexpect = "closed"\n')
        for i in range(int(targets)):
            f.write(f'\n[[targets]]\nname = "t{i:04d}"\nhost = "127.1.{i // 250}.{i % 250 + 1}"\nports = [{plist}]\n')


if __name__ == '__main__':
    globals()[sys.argv[1].replace('-', '_')](*sys.argv[2:])
PY

# The listener: every port that should read open in this run.
ALL_OPEN=("$OPEN_A" "${B_OPEN[@]}" "${D_OPEN[@]}" "${E_OPEN[@]}")
spawn LISTENER "$TMP/listener.log" python3 "$TMP/bench.py" listen "$TMP/accepts" "${ALL_OPEN[@]}"
for _ in $(seq 50); do [ -s "$TMP/accepts" ] && break; sleep 0.1; done
[ -s "$TMP/accepts" ] || die "the listener did not start: $(cat "$TMP/listener.log")"
accepts() { cat "$TMP/accepts"; }
overflows() { nsx python3 "$TMP/bench.py" netstat; }

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------------------------
# 2a. /probe throughput, ours vs blackbox_exporter, and (f) TIME_WAIT after each.
if want a; then
log "(a) /probe throughput: wrk ${WRK_ARGS[*]}"
cat >"$TMP/probe.toml" <<EOF
[defaults]
timeout = "1s"
retries = 0

[probe]
allow = ["127.0.0.0/8"]
EOF
cat >"$TMP/blackbox.yml" <<EOF
modules:
  tcp_connect:
    prober: tcp
    timeout: 1s
EOF
OURS_URL="http://$OURS_ADDR/probe?target=127.0.0.1:$OPEN_A"
BB_URL="http://$BB_ADDR/probe?module=tcp_connect&target=127.0.0.1:$OPEN_A"

W_rps="" W_requests="" W_errors="" W_non2xx="" W_p99_ms=""
probe_run() { # probe_run NAME URL PID: check, warm up, measure; sets W_*, A_*
    local name=$1 url=$2 pid=$3
    fetch "$url" >"$TMP/$name.probe.txt" || die "$name /probe failed"
    grep -q '^probe_success 1' "$TMP/$name.probe.txt" || die "$name /probe of the open port is not a success: $(grep probe_success "$TMP/$name.probe.txt")"
    if [ ${#WRK_WARMUP[@]} -gt 0 ]; then nsx wrk "${WRK_WARMUP[@]}" "$url" >/dev/null; fi
    sleep 0.5
    local a0 o0
    local c0 l0
    a0=$(accepts) o0=$(overflows) c0=$(cpu_ticks "$pid") l0=$(cpu_ticks "$LISTENER")
    cmd nsx wrk "${WRK_ARGS[@]}" "$url" >"$TMP/$name.wrk.txt" || die "wrk against $name"
    A_CPU=$(($(cpu_ticks "$pid") - c0)) A_LCPU=$(($(cpu_ticks "$LISTENER") - l0))
    sleep 0.5
    A_ACCEPTS=$(($(accepts) - a0)) A_OVERFLOWS=$(($(overflows) - o0))
    W_LINE=$(py wrk "$TMP/$name.wrk.txt")
    local k v kv
    for kv in $W_LINE; do
        k=${kv%%=*} v=${kv#*=}
        printf -v "W_$k" '%s' "$v"
    done
    fetch "$url" >"$TMP/$name.probe2.txt" || die "$name /probe after the load"
    grep -q '^probe_success 1' "$TMP/$name.probe2.txt" || die "$name /probe fails after the load"
    # CPU time of the exporter per request (us), and of the listener.
    A_CPU_US=$(calc "$A_CPU / $CLK * 1e6 / $W_requests" .0f)
    A_LCPU_S=$(calc "$A_LCPU / $CLK" .1f)
    log "  $name: $W_LINE accepts=$A_ACCEPTS listen-overflows=$A_OVERFLOWS exporter-cpu=${A_CPU_US}us/request listener-cpu=${A_LCPU_S}s"
}

start_ours OURS "$TMP/probe.toml" "$TMP/ours-probe.log"
probe_run ours "$OURS_URL" "$OURS"
O_RPS=$W_rps O_REQ=$W_requests O_ERR=$W_errors O_NON2XX=$W_non2xx O_P99=$W_p99_ms O_ACC=$A_ACCEPTS O_OVF=$A_OVERFLOWS O_CPU=$A_CPU_US O_LCPU=$A_LCPU_S
sleep 1
F_OURS_TW=$(ss_tw "( sport = :$OPEN_A or dport = :$OPEN_A )")
stop "$OURS"

spawn BB "$TMP/blackbox.log" prometheus-blackbox-exporter --config.file="$TMP/blackbox.yml" --web.listen-address="$BB_ADDR"
wait_http "http://$BB_ADDR/-/healthy" 30 || die "blackbox_exporter did not start: $(tail -5 "$TMP/blackbox.log")"
F_BB_TW_BEFORE=$(ss_tw "( sport = :$OPEN_A or dport = :$OPEN_A )")
probe_run blackbox "$BB_URL" "$BB"
B_RPS=$W_rps B_REQ=$W_requests B_ERR=$W_errors B_NON2XX=$W_non2xx B_P99=$W_p99_ms B_ACC=$A_ACCEPTS B_OVF=$A_OVERFLOWS B_CPU=$A_CPU_US B_LCPU=$A_LCPU_S
sleep 1
F_BB_TW=$(ss_tw "( sport = :$OPEN_A or dport = :$OPEN_A )")
F_BB_TW_PROBER=$(ss_tw "( dport = :$OPEN_A )")
TW_MAX=$(nsx cat /proc/sys/net/ipv4/tcp_max_tw_buckets)
stop "$BB"

RATIO_A=$(calc "$O_RPS / $B_RPS" .2f)
row "a. /probe throughput (requests/s, wrk ${WRK_ARGS[*]})" "$O_RPS" "$B_RPS (blackbox_exporter)" "${RATIO_A}x" ">= 3x" "$(judge "$RATIO_A" '>=' 3)"
row "a. /probe wrk socket errors + non-2xx" "$O_ERR + $O_NON2XX" "$B_ERR + $B_NON2XX" "" "0" \
    "$(judge "$((O_ERR + O_NON2XX + B_ERR + B_NON2XX))" '==' 0)"
row "a. /probe CPU time of the exporter per request (us)" "$O_CPU" "$B_CPU" "$(calc "$O_CPU / $B_CPU" .2f)x" "" "n/a"
row "a. /probe latency p99 (ms, under that load)" "$O_P99" "$B_P99" "$(calc "$O_P99 / $B_P99" .2f)x" "" "n/a"
row "a. listener kept up: accepts / requests, listen overflows" "$O_ACC / $O_REQ, $O_OVF" "$B_ACC / $B_REQ, $B_OVF" "" "accepts >= requests, 0 overflows" \
    "$(judge "$(( (O_ACC >= O_REQ && B_ACC >= B_REQ && O_OVF == 0 && B_OVF == 0) ? 1 : 0 ))" '==' 1)"
note "a. Both /probe endpoints probe 127.0.0.1:$OPEN_A (a python3 accept-and-close loop) with a 1 s timeout and one attempt; the same wrk client, one after the other (ours first), each after a 2 s warm-up run (full mode). 'accepts' counts the listener's accepted connections during the wrk run (one per probe), 'listen overflows' is TcpExtListenOverflows+ListenDrops of the namespace: both show whether the listener kept up. wrk, the exporter and the listener share the machine's $(nproc) cores; the listener used $O_LCPU CPU-s during our run and $B_LCPU CPU-s during blackbox's. CPU per request = utime+stime of the exporter process over the wrk run / requests."
fi # a

# ---------------------------------------------------------------------------------------------
# 2b. Full range vs nmap.
if want b; then
log "(b) full range $RANGE_LO-$RANGE_HI vs nmap"
cmd nsx iptables -A INPUT -p tcp --dport "$B_DROP" -j DROP
cat >"$TMP/range.toml" <<EOF
[defaults]
interval = "1h"
timeout = "1s"
retries = 0
expect = "closed"

[[targets]]
name = "range"
host = "127.0.0.1"
ports = ["$RANGE_LO-$RANGE_HI"]
EOF
# nmap, NMAP_RUNS times; sets NMAP_TIMES; the first run's XML is the reference.
run_nmap() {
    local i xml wall user sys
    NMAP_TIMES=() NMAP_CPU=()
    CMDS+=("ip netns exec $NS nmap -sT -Pn -n -T4 -p$RANGE_LO-$RANGE_HI 127.0.0.1 -oX nmap.xml   # x$NMAP_RUNS, timed with bash's time")
    for i in $(seq "$NMAP_RUNS"); do
        xml=$TMP/nmap$i.xml
        [ "$i" = 1 ] && xml=$TMP/nmap.xml
        read -r wall user sys < <({ TIMEFORMAT='%R %U %S'; time nsx timeout 600 nmap -sT -Pn -n -T4 -p"$RANGE_LO-$RANGE_HI" 127.0.0.1 -oX "$xml" >/dev/null; } 2>&1) \
            || die "nmap"
        [ -s "$xml" ] || die "nmap wrote no XML"
        NMAP_TIMES+=("$wall") NMAP_CPU+=("$(calc "$user + $sys" .2f)")
    done
    read -r NMAP_MED _ _ <<<"$(py stats "${NMAP_TIMES[@]}")"
    log "  nmap: ${NMAP_TIMES[*]} s ($(py nmap_summary "$TMP/nmap.xml"))"
}

# One run of ours: start, time to ready, compare the states with nmap's; sets R_TIME R_UP R_AGREE.
# The first run also runs nmap once ours is ready and idle (interval 1h), so that both see the
# same listeners, our own HTTP port included.
range_run() {
    local tag=$1
    shift
    launch_timed "range-$tag" "$TMP/range.toml" 600 "$@"
    R_UP=$L_UP R_TIME=$L_TIME R_CPU=$L_CPU
    fetch "http://$OURS_ADDR/metrics" >"$TMP/range-$tag.metrics" || die "range run $tag: /metrics"
    [ -s "$TMP/nmap.xml" ] || run_nmap
    stop_timed
    R_AGREE=$(py compare "$TMP/range-$tag.metrics" "$TMP/nmap.xml" range)
    log "  ours $tag ($*): ready after ${R_TIME}s (up after ${R_UP}s, ${R_CPU} CPU-s), $R_AGREE"
}
DEF_TIMES=()
B_ALL_AGREE=1
B_DETAIL=()
for i in $(seq "$OURS_RUNS"); do
    if [ "$i" = 1 ]; then CMDS+=("(timed from start to /-/ready 200) ip netns exec $NS $BIN --config.file range.toml --web.listen-address $OURS_ADDR [--probe.concurrency C --probe.rate R]"); fi
    range_run "default$i"
    DEF_TIMES+=("$R_TIME")
    [[ "$R_AGREE" == agree* ]] || B_ALL_AGREE=0
    B_DETAIL+=("default (--probe.concurrency $DEF_CONC --probe.rate $DEF_RATE) run $i: ${R_TIME} s, ${R_CPU} CPU-s, $R_AGREE")
done
read -r DEF_MED _ _ <<<"$(py stats "${DEF_TIMES[@]}")"
BEST_TIME=$DEF_MED BEST_SET="--probe.concurrency $DEF_CONC --probe.rate $DEF_RATE, the defaults"
if [ "$MODE" = full ]; then
    GRID=("$DEF_CONC 0" "128 0" "4096 0" "4096 $DEF_RATE" "$DEF_CONC 100000" "4096 100000" "256 $DEF_RATE")
else
    GRID=("$DEF_CONC 0")
fi
# The defaults may coincide with a grid point: run each setting once.
mapfile -t GRID < <(printf '%s\n' "${GRID[@]}" | awk '!seen[$0]++')
for g in "${GRID[@]}"; do
    read -r c r <<<"$g"
    range_run "c$c-r$r" --probe.concurrency "$c" --probe.rate "$r"
    B_DETAIL+=("--probe.concurrency $c --probe.rate $r: ${R_TIME} s, ${R_CPU} CPU-s, $R_AGREE")
    if [[ "$R_AGREE" == agree* ]]; then
        if awk "BEGIN { exit !($R_TIME < $BEST_TIME) }"; then BEST_TIME=$R_TIME BEST_SET="--probe.concurrency $c --probe.rate $r"; fi
    else
        B_ALL_AGREE=0
    fi
done
RATIO_B=$(calc "$DEF_MED / $NMAP_MED" .2f)
RATIO_BEST=$(calc "$BEST_TIME / $NMAP_MED" .2f)
row "b. full range $RANGE_LO-$RANGE_HI, start to ready (s), default flags" "$DEF_MED" "$NMAP_MED (nmap -sT -T4)" "${RATIO_B}x" "<= 0.5x" "$(judge "$RATIO_B" '<=' 0.5)"
row "b. full range, best flags ($BEST_SET)" "$BEST_TIME" "$NMAP_MED" "${RATIO_BEST}x" "<= 0.5x" "$(judge "$RATIO_BEST" '<=' 0.5)"
row "b. full range states agree with nmap (every run)" "$(echo "$R_AGREE" | cut -d' ' -f2-5 | cut -d';' -f1)" "$(py nmap_summary "$TMP/nmap.xml")" "" "same states, no false filtered" "$(judge "$B_ALL_AGREE" '==' 1)"
note "b. Ours: the time from starting the process to the first 200 of /-/ready (every target probed once; polled every 10 ms from inside the namespace; the process is up, /-/healthy, after a few ms, so this is the first round's duration); median of $OURS_RUNS run(s): ${DEF_TIMES[*]} s. nmap: wall time of $NMAP_RUNS run(s): ${NMAP_TIMES[*]} s, CPU (user+sys) ${NMAP_CPU[*]} s (nmap's own elapsed, first run: $(py nmap_elapsed "$TMP/nmap.xml") s). CPU-s of ours = utime+stime of the process at ready. Retries 0: the DROP port's probe alone takes timeout x (retries + 1), so 1 s is a floor for ours with this config (with retries 1 every setting measured 2.2 s, the 2 s floor); no false filtered is checked above; nmap adapts its timeouts to the round-trip times it measures (about 1 s for that port scanned alone). Config: timeout 1s, retries 0, expect closed; open: ${B_OPEN[*]} and whatever else listens in the namespace (the listener's other ports, our own $OURS_ADDR), filtered: $B_DROP (iptables DROP). Flags tried (each run compared with nmap):"
for d in "${B_DETAIL[@]}"; do note "   - $d"; done
nsx iptables -D INPUT -p tcp --dport "$B_DROP" -j DROP
fi # b

# ---------------------------------------------------------------------------------------------
# 2c. /metrics with 100k pairs, and 2d. scheduled probing of the same pairs.
if want c; then
log "(c) /metrics with $C_TARGETS targets x $C_PORTS ports = $PAIRS pairs"
py config_many "$TMP/many.toml" "$C_TARGETS" "$C_PORTS" "$C_INTERVAL"
CMDS+=("# many.toml: $C_TARGETS targets 127.1.x.y, ports = [10000, ..., $((10000 + C_PORTS - 1))] each, interval $C_INTERVAL, timeout 1s, retries 1, expect closed")
T_MANY=$(date +%s.%N)
start_ours MANY "$TMP/many.toml" "$TMP/many.log"
line=$(nsx python3 "$TMP/bench.py" wait-ready "http://$OURS_ADDR" "$T_MANY" 600) || die "100k exporter not ready"
read -r _ MANY_READY <<<"$line"
sleep 1
MANY_RSS_READY=$(rss_kb "$MANY") # before any scrape: no rendered table cached yet
log "  ready after $MANY_READY s"
fetch "http://$OURS_ADDR/metrics" >"$TMP/many.metrics" || die "/metrics"
SIZE=$(stat -c %s "$TMP/many.metrics")
LINES=$(grep -vc '^#' "$TMP/many.metrics" || true)
ROWS_STATE=$(grep -c '^port_state{' "$TMP/many.metrics" || true)
[ "$ROWS_STATE" -ge $((PAIRS * 4)) ] || die "expected $((PAIRS * 4)) port_state series, got $ROWS_STATE"

scrape_times() { # scrape_times N [curl args]: prints time_total of each, one per line
    local n=$1 i
    shift
    for i in $(seq "$n"); do
        nsx curl -sf -m 60 -o /dev/null -w '%{time_total} %{size_download}\n' "$@" "http://$OURS_ADDR/metrics"
    done
}
CMDS+=("ip netns exec $NS curl -sf -o /dev/null -w '%{time_total}' http://$OURS_ADDR/metrics   # x$SCRAPES, then with -H 'Accept-Encoding: gzip' x$SCRAPES, then $CONCURRENT at once")
# The renders counter as one scrape reports it (that scrape's own rendering included), read
# around each series: a scrape of an unchanged table is served from the cache.
renders_now() { fetch "http://$OURS_ADDR/metrics" | tail -c 200000 | awk '/^port_exporter_table_renders_total / { print $2 }'; }
RN0=$(renders_now)
mapfile -t PLAIN < <(scrape_times "$SCRAPES")
RN1=$(renders_now)
mapfile -t GZ < <(scrape_times "$SCRAPES" -H 'Accept-Encoding: gzip')
RN2=$(renders_now)
between() { if [ "$1" -le 0 ]; then echo 0; else echo "$(($1 - 1))-$1"; fi; } # the closing read may have rendered
PLAIN_RENDERS=$(between $((RN1 - RN0))) GZ_RENDERS=$(between $((RN2 - RN1)))
mapfile -t PLAIN_T < <(printf '%s\n' "${PLAIN[@]}" | cut -d' ' -f1)
mapfile -t GZ_T < <(printf '%s\n' "${GZ[@]}" | cut -d' ' -f1)
read -r C_MED C_MIN C_MAX <<<"$(py stats "${PLAIN_T[@]}")"
read -r G_MED G_MIN G_MAX <<<"$(py stats "${GZ_T[@]}")"
GZ_SIZE=$(echo "${GZ[-1]}" | cut -d' ' -f2)

# Concurrent scrapes: each body carries the renders counter; compare with the last scrape before.
# The exporter's own metrics come after the table: keep only the bodies' tails (through a pipe,
# so that writing 8 bodies to disk is not what gets timed).
renders_in() { awk '/^port_exporter_table_renders_total / { print $2 }' "$1"; }
fetch "http://$OURS_ADDR/metrics" | tail -c 200000 >"$TMP/before.metrics"
R_BEFORE=$(renders_in "$TMP/before.metrics")
CPIDS=()
for i in $(seq "$CONCURRENT"); do
    nsx curl -sf -m 60 -w '%{stderr}%{time_total}\n' "http://$OURS_ADDR/metrics" 2>"$TMP/conc$i.time" | tail -c 200000 >"$TMP/conc$i.metrics" &
    CPIDS+=($!)
done
for p in "${CPIDS[@]}"; do wait "$p" || die "a concurrent scrape failed"; done
R_SEEN=()
for i in $(seq "$CONCURRENT"); do R_SEEN+=("$(renders_in "$TMP/conc$i.metrics")"); done
R_AFTER=$(printf '%s\n' "${R_SEEN[@]}" | sort -g | tail -1)
R_USED=$(calc "$R_AFTER - $R_BEFORE" .0f)
mapfile -t CONC_T < <(cat "$TMP"/conc*.time)
read -r CC_MED _ CC_MAX <<<"$(py stats "${CONC_T[@]}")"
rm -f "$TMP"/conc*.metrics "$TMP/before.metrics"

# The baseline "peer": the same bytes as a static file from python3 -m http.server.
mkdir -p "$TMP/static"
cp "$TMP/many.metrics" "$TMP/static/metrics"
spawn STATIC "$TMP/static.log" python3 -m http.server "${STATIC_ADDR##*:}" --bind "${STATIC_ADDR%:*}" --directory "$TMP/static"
wait_http "http://$STATIC_ADDR/metrics" 20 || die "python3 -m http.server did not start"
mapfile -t STATIC_T < <(for i in $(seq "$SCRAPES"); do nsx curl -sf -m 60 -o /dev/null -w '%{time_total}\n' "http://$STATIC_ADDR/metrics"; done)
read -r S_MED _ _ <<<"$(py stats "${STATIC_T[@]}")"
stop "$STATIC"
rm -rf "$TMP/static"

C_MED_MS=$(calc "$C_MED * 1000" .1f)
G_MED_MS=$(calc "$G_MED * 1000" .1f)
S_MED_MS=$(calc "$S_MED * 1000" .1f)
row "c. /metrics, $PAIRS pairs, median of $SCRAPES uncompressed scrapes (ms)" "$C_MED_MS ($(calc "$SIZE / 1048576" .1f) MiB)" "none; static file via python3 http.server: $S_MED_MS" "$(calc "$C_MED / $S_MED" .2f)x" "< 250 ms" "$(judge "$C_MED_MS" '<' 250)"
row "c. /metrics gzip, median of $SCRAPES (ms)" "$G_MED_MS ($(calc "$GZ_SIZE / 1048576" .1f) MiB)" "none" "" "" "n/a"
row "c. $CONCURRENT concurrent scrapes: slowest (ms), table renders used" "$(calc "$CC_MAX * 1000" .1f), $R_USED renders" "none" "" "shared (renders < $CONCURRENT)" "$(judge "$R_USED" '<' "$CONCURRENT")"
note "c. $C_TARGETS targets on 127.1.x.y x $C_PORTS listed ports (10000-$((10000 + C_PORTS - 1)); ${D_OPEN[*]} open, the rest closed; expect closed) = $PAIRS pairs, $ROWS_STATE port_state series, $LINES samples, $SIZE bytes ($GZ_SIZE gzip). Ready after $MANY_READY s. curl time_total: uncompressed median $C_MED s (min $C_MIN, max $C_MAX), gzip median $G_MED s (min $G_MIN, max $G_MAX). Renderings during the uncompressed series: $PLAIN_RENDERS of $SCRAPES scrapes, during the gzip series: $GZ_RENDERS (probes change the table every few ms to tens of ms; a scrape that finds it unchanged is served from the cache in a few ms). $CONCURRENT concurrent scrapes: median $CC_MED s, slowest $CC_MAX s; renders counter before $R_BEFORE, seen in their bodies: ${R_SEEN[*]}. The static-file baseline serves the same $SIZE bytes (median of $SCRAPES: $S_MED s); there is no peer exporter for this figure."
fi # c

if want d; then
log "(d) scheduled probing: warm-up $D_WARMUP s, window $D_WINDOW s"
sleep "$D_WARMUP"
# Only the exporter's own metrics (at the end of the body) are needed from these two scrapes.
fetch "http://$OURS_ADDR/metrics" >"$TMP/d.tmp" && tail -c 200000 "$TMP/d.tmp" | sed '1d' >"$TMP/d0.metrics"
c0=$(cpu_ticks "$MANY") w0=$(date +%s.%N)
sleep "$D_WINDOW"
c1=$(cpu_ticks "$MANY") w1=$(date +%s.%N)
RSS=$(rss_kb "$MANY") HWM=$(hwm_kb "$MANY")
fetch "http://$OURS_ADDR/metrics" >"$TMP/d.tmp" && tail -c 200000 "$TMP/d.tmp" | sed '1d' >"$TMP/d1.metrics"
rm -f "$TMP/d.tmp"
CORES=$(calc "($c1 - $c0) / $CLK / ($w1 - $w0)" .3f)
KB_PAIR=$(calc "$RSS / $PAIRS" .2f)
read -r D_P99 D_N <<<"$(py quantile "$TMP/d0.metrics" "$TMP/d1.metrics" port_exporter_probe_start_lateness_seconds 0.99)"
D_PROBES=$(calc "$(py metric "$TMP/d1.metrics" port_exporter_probes_total) - $(py metric "$TMP/d0.metrics" port_exporter_probes_total)" .0f)
D_EXPECTED=$(calc "$PAIRS * ($w1 - $w0) / ${C_INTERVAL%s}" .0f)
D_FILTER="sport = :${D_OPEN[0]}"
for p in "${D_OPEN[@]}"; do D_FILTER="$D_FILTER or sport = :$p or dport = :$p"; done
F_D_TW=$(ss_tw "( $D_FILTER )")
row "d. scheduled probing of $PAIRS pairs every $C_INTERVAL: CPU (cores)" "$CORES" "none" "" "<= 0.5 core" "$(judge "$CORES" '<=' 0.5)"
row "d. resident memory per pair (KB)" "$KB_PAIR ($(calc "$RSS / 1024" .0f) MiB)" "none" "" "<= 2 KB" "$(judge "$KB_PAIR" '<=' 2)"
D_P99_MS=$(ms_or "$D_P99")
if [[ "$D_P99" == ">"* ]]; then D_RES=FAIL; else D_RES=$(judge "$D_P99" '<' 1); fi
row "d. probe start lateness p99 (ms)" "$D_P99_MS" "none" "" "< 1000 ms" "$D_RES"
note "d. Window $(calc "$w1 - $w0" .1f) s after ${D_WARMUP} s of warm-up (and the scrapes of c), no scrapes inside it: $D_PROBES probes finished (schedule: ~$D_EXPECTED), $D_N lateness observations. VmRSS at the end $RSS kB, which includes the last rendering the exporter caches for the next scrape ($SIZE bytes of text and $GZ_SIZE of gzip); $MANY_RSS_READY kB 1 s after ready, before any scrape; peak VmHWM $HWM kB ($(calc "$HWM / $PAIRS" .2f) KB/pair), reached while rendering for the scrapes of c. Per pair = VmRSS at the end / $PAIRS. CPU = (utime+stime) of /proc/PID/stat over the window / wall time."
fi # d
if want c; then
stop "$MANY"
fi # c: the exporter of c and d

# ---------------------------------------------------------------------------------------------
# 2e. 9,000 silent ports in flight.
if want e; then
log "(e) $E_PORTS silent ports in flight"
cat >"$TMP/silent.toml" <<EOF
[[targets]]
name = "silent"
host = "127.0.0.1"
ports = ["$E_LO-$E_HI"]
# Fixed: the row measures what 9,000 probes waiting at once cost; adaptive timing would give
# up on them after the address's learned 100 ms + 200 ms (row g measures that).
timing = "fixed"
timeout = "${E_TIMEOUT}s"
retries = 0
interval = "${E_INTERVAL}s"
expect = "not_open"

[[targets]]
name = "open"
host = "127.0.0.1"
ports = [$(IFS=,; echo "${E_OPEN[*]}" | sed 's/,/, /g')]
timeout = "1s"
retries = 0
interval = "1s"
expect = "open"
EOF
start_ours SILENT "$TMP/silent.toml" "$TMP/silent.log" --probe.concurrency "$E_CONC"
wait_http "http://$OURS_ADDR/-/ready" 60 || die "(e) not ready"
# Baseline: the same process and table (every silent port has its row, closed), nothing waiting.
nsx python3 "$TMP/bench.py" sample "$SILENT" "http://$OURS_ADDR/metrics" "$E_BASE_SECS" 0.5 >"$TMP/e-base.json"
read -r E_BASE E_BASE_INFLIGHT <<<"$(py median_rss "$TMP/e-base.json")"
cmd nsx iptables -I INPUT -p tcp --dport "$E_LO:$E_HI" -j DROP
fetch "http://$OURS_ADDR/metrics" >"$TMP/e0.metrics"
# The silent target's next round (within one interval) finds every port silent: wait until
# they are all in flight, then measure while they wait out their timeout.
E_WAITED=""
for i in $(seq $(((E_INTERVAL + 5) * 10))); do
    n=$(in_flight || true)
    if [ "${n:-0}" -ge "$E_PORTS" ]; then
        E_WAITED=$(calc "$i / 10" .1f)
        break
    fi
    sleep 0.1
done
[ -n "$E_WAITED" ] || die "(e) the $E_PORTS silent ports were never all in flight at once"
fetch "http://$OURS_ADDR/metrics" >"$TMP/e1.metrics"
nsx python3 "$TMP/bench.py" sample "$SILENT" "http://$OURS_ADDR/metrics" "$E_WINDOW" 0.5 >"$TMP/e-silent.json"
fetch "http://$OURS_ADDR/metrics" >"$TMP/e2.metrics"
E_HWM=$(hwm_kb "$SILENT")
nsx iptables -D INPUT -p tcp --dport "$E_LO:$E_HI" -j DROP
read -r E_MOST E_RSS E_BUSY E_SAMPLES <<<"$(py inflight_rss "$TMP/e-silent.json" "$E_PORTS" 0.9)"
# Lateness while they are in flight (the other target's probes), and, for information, of the
# round that started them.
read -r E_P99 E_N <<<"$(py quantile "$TMP/e1.metrics" "$TMP/e2.metrics" port_exporter_probe_start_lateness_seconds 0.99)"
read -r E_START_P99 E_START_N <<<"$(py quantile "$TMP/e0.metrics" "$TMP/e1.metrics" port_exporter_probe_start_lateness_seconds 0.99)"
E_OPEN_OK=$(py metric "$TMP/e2.metrics" port_target_ports target=open state=open)
stop "$SILENT"
if [ "$E_RSS" = n/a ]; then E_EXTRA=n/a; else E_EXTRA=$(calc "($E_RSS - $E_BASE) / 1024" .1f); fi
E_P99_MS=$(ms_or "$E_P99")
if [[ "$E_P99" == ">"* ]]; then E_RES=FAIL; else E_RES=$(judge "$E_P99" '<' 0.05); fi
row "e. $E_PORTS silent ports: most in flight" "$E_MOST" "none" "" "~$E_PORTS" "$(judge "$E_MOST" '>=' "$(calc "$E_PORTS * 0.9" .0f)")"
row "e. extra resident memory with them in flight (MB)" "$E_EXTRA" "none" "" "<= 20 MB" "$(judge "$E_EXTRA" '<=' 20)"
row "e. probe start lateness p99 while they are in flight (ms)" "$E_P99_MS" "none" "" "< 50 ms" "$E_RES"
row "e. probe start lateness p99 of the round starting them (ms)" "$(ms_or "$E_START_P99")" "none" "" "" "n/a"
note "e. --probe.concurrency $E_CONC; target 'silent' $E_LO-$E_HI (timeout ${E_TIMEOUT}s, retries 0, interval ${E_INTERVAL}s, expect not_open) and target 'open' (${#E_OPEN[@]} open ports, interval 1s). Baseline: median VmRSS $E_BASE kB over $E_BASE_SECS s after the first round, before the DROP rule (the silent ports answered with resets and have their rows; most in flight then: $E_BASE_INFLIGHT). Then the DROP rule; the target's next round had all $E_PORTS in flight $E_WAITED s later; then $E_SAMPLES samples every 0.5 s over $E_WINDOW s (inside the $E_TIMEOUT s the probes wait), $E_BUSY of them with >= 90% in flight; their highest VmRSS $E_RSS kB (VmHWM $E_HWM kB). Lateness while in flight: the $E_N probes started in that window (the open target's). Lateness of the round starting them: $E_START_N probes from the DROP rule until all were in flight, the $E_PORTS silent ones included. At the end $E_OPEN_OK of ${#E_OPEN[@]} open ports read open."
fi # e

# ---------------------------------------------------------------------------------------------
# 2f. TIME_WAIT.
if want f; then
row "f. TIME_WAIT sockets on the open port after the wrk run of a" "$F_OURS_TW" "$F_BB_TW (blackbox_exporter; $F_BB_TW_PROBER on its side)" "" "ours 0" "$(judge "$F_OURS_TW" '==' 0)"
row "f. TIME_WAIT on ports ${D_OPEN[0]}-${D_OPEN[-1]} after the scheduled rounds of d" "$F_D_TW" "n/a" "" "0" "$(judge "$F_D_TW" '==' 0)"
note "f. \`ss -tan state time-wait\` in the namespace, counting sockets with the open port on either side, 1 s after each wrk run ($O_REQ probes by ours, $B_REQ by blackbox; before blackbox's run: $F_BB_TW_BEFORE). The listener closes its side at once after accept; ours resets (SO_LINGER 0) so neither side keeps TIME_WAIT; blackbox closes with a FIN. net.ipv4.tcp_max_tw_buckets in the namespace: $TW_MAX."
fi # f

# ---------------------------------------------------------------------------------------------
# 2g-2i: addresses of 198.18.0.0/15 on the namespace's lo, and a listener bound to those only
# (nothing of a-f listens on them, and none of their ports opens on 127.0.0.1).
if want g || want h || want i; then
log "(g-i) addresses $G_ADDR, $H_ADDR, $I_NET.1-$I_ADDRS on lo, and their listener"
cmd nsx ip addr add "$G_ADDR/32" dev lo
cmd nsx ip addr add "$H_ADDR/32" dev lo
CMDS+=("ip netns exec $NS ip addr add $I_NET.N/32 dev lo   # N = 1 to $I_ADDRS")
for k in $(seq "$I_ADDRS"); do nsx ip addr add "$I_NET.$k/32" dev lo; done
GI_LISTEN=()
for p in "${G_OPEN[@]}"; do GI_LISTEN+=("$G_ADDR:$p"); done
for p in $(seq "$H_OPEN_LO" "$H_OPEN_HI"); do GI_LISTEN+=("$H_ADDR:$p"); done
for k in $(seq "$I_ADDRS"); do for p in "${I_OPEN[@]}"; do GI_LISTEN+=("$I_NET.$k:$p"); done; done
G_OPEN_CSV=$(IFS=,; echo "${G_OPEN[*]}")
I_OPEN_CSV=$(IFS=,; echo "${I_OPEN[*]}")
CMDS+=("ip netns exec $NS python3 $TMP/bench.py listen $TMP/accepts2 $G_ADDR:{$G_OPEN_CSV} $H_ADDR:{$H_OPEN_LO..$H_OPEN_HI} $I_NET.{1..$I_ADDRS}:{$I_OPEN_CSV}")
# As spawn does, without writing all ${#GI_LISTEN[@]} addresses into the commands.
ip netns exec "$NS" python3 "$TMP/bench.py" listen "$TMP/accepts2" "${GI_LISTEN[@]}" >"$TMP/listener2.log" 2>&1 </dev/null &
LISTENER2=$!
PIDS+=("$LISTENER2")
for _ in $(seq 50); do [ -s "$TMP/accepts2" ] && break; sleep 0.1; done
[ -s "$TMP/accepts2" ] || die "the listener of g-i did not start: $(cat "$TMP/listener2.log")"
fi # g-i

# ---------------------------------------------------------------------------------------------
# 2g. A firewalled host, ours vs nmap.
if want g; then
log "(g) firewalled host $G_ADDR, ports ${G_RANGES[*]}, default timing"
cmd nsx iptables -A INPUT -d "$G_ADDR" -p tcp -m multiport --dports "$G_OPEN_CSV" -j ACCEPT
cmd nsx iptables -A INPUT -d "$G_ADDR" -p tcp --dport "$G_CLOSED" -j REJECT --reject-with tcp-reset
cmd nsx iptables -A INPUT -d "$G_ADDR" -p tcp --syn -j DROP
G_PORTS_TOML=$(printf '"%s", ' "${G_RANGES[@]}")
G_PORTS_TOML=${G_PORTS_TOML%, }
cat >"$TMP/firewalled.toml" <<EOF
# The default timing: no timeout or retries.
[defaults]
interval = "1h"
# Changes no timing: only gives every open and closed port of the range its series, so that
# the sets can be compared with nmap's.
expect = "filtered"

[[targets]]
name = "firewalled"
host = "$G_ADDR"
ports = [$G_PORTS_TOML]
EOF
CMDS+=("# firewalled.toml: interval 1h, expect filtered, one target $G_ADDR, ports = [$G_PORTS_TOML]; no timeout or retries")
CMDS+=("(timed from start to /-/ready 200) ip netns exec $NS $BIN --config.file firewalled.toml --web.listen-address $OURS_ADDR")
launch_timed firewalled "$TMP/firewalled.toml" "$G_LIMIT"
G_TIME=$L_TIME G_CPU=$L_CPU
fetch "http://$OURS_ADDR/metrics" >"$TMP/firewalled.metrics" || die "(g) /metrics"
stop_timed
log "  ours: ready after $G_TIME s ($G_CPU CPU-s)"
CMDS+=("ip netns exec $NS nmap -sT -T4 -Pn -n -p$G_NMAP_PORTS $G_ADDR -oX nmap-firewalled.xml   # timed with bash's time")
read -r G_NMAP G_NMAP_USER G_NMAP_SYS < <({ TIMEFORMAT='%R %U %S'; time nsx timeout "$G_LIMIT" nmap -sT -T4 -Pn -n -p"$G_NMAP_PORTS" "$G_ADDR" -oX "$TMP/nmap-firewalled.xml" >/dev/null; } 2>&1) \
    || die "(g) nmap"
[ -s "$TMP/nmap-firewalled.xml" ] || die "(g) nmap wrote no XML"
G_AGREE=$(py compare "$TMP/firewalled.metrics" "$TMP/nmap-firewalled.xml" firewalled open,closed)
log "  nmap: $G_NMAP s; ours $G_AGREE"
nsx iptables -D INPUT -d "$G_ADDR" -p tcp -m multiport --dports "$G_OPEN_CSV" -j ACCEPT
nsx iptables -D INPUT -d "$G_ADDR" -p tcp --dport "$G_CLOSED" -j REJECT --reject-with tcp-reset
nsx iptables -D INPUT -d "$G_ADDR" -p tcp --syn -j DROP
RATIO_G=$(calc "$G_TIME / $G_NMAP" .2f)
if [[ "$G_AGREE" == agree* ]]; then G_RES=pass; else G_RES=FAIL; fi
row "g. firewalled host, ports ${G_RANGES[*]} (every SYN dropped but ${G_OPEN[*]} open, $G_CLOSED reset), default timing: start to ready (s)" "$G_TIME" "$G_NMAP (nmap -sT -T4)" "${RATIO_G}x" "<= 0.5x" "$(judge "$RATIO_G" '<=' 0.5)"
row "g. firewalled host: states agree with nmap" "$(echo "$G_AGREE" | cut -d' ' -f2-5 | cut -d';' -f1)" "$(py nmap_summary "$TMP/nmap-firewalled.xml")" "" "same open and closed sets" "$G_RES"
note "g. $G_ADDR on lo; iptables: ACCEPT to ${G_OPEN[*]} (listeners bound to $G_ADDR), REJECT --reject-with tcp-reset to $G_CLOSED, DROP of every other SYN to $G_ADDR. Ours: the default timing (no timeout or retries keys: --help's defaults, --probe.concurrency $DEF_CONC, --probe.rate $DEF_RATE), interval 1h, expect filtered (no effect on timing: every open and closed range port then has its series); time from starting the process to the first 200 of /-/ready (the first round), one run, $G_CPU CPU-s at ready. nmap: wall time of one run, CPU (user+sys) $(calc "$G_NMAP_USER + $G_NMAP_SYS" .2f) s, its own elapsed $(py nmap_elapsed "$TMP/nmap-firewalled.xml") s. Compared: the per-state counts (ours port_target_ports) and the open and closed ports one by one: $G_AGREE."
fi # g

# ---------------------------------------------------------------------------------------------
# 2h. A lossy path: false filtered per probe, ours vs nmap.
if want h; then
log "(h) lossy path $H_ADDR, $H_LOSS loss each way, $H_PORTS ports x $H_ROUNDS rounds"
H_RANGE=$H_OPEN_LO:$H_CLOSED_HI
cmd nsx iptables -A INPUT -d "$H_ADDR" -p tcp --dport "$H_RANGE" -m statistic --mode random --probability "$H_LOSS" -j DROP
cmd nsx iptables -A INPUT -s "$H_ADDR" -p tcp --sport "$H_RANGE" -m statistic --mode random --probability "$H_LOSS" -j DROP
cat >"$TMP/lossy.toml" <<EOF
# The default timing: no timeout or retries.
[defaults]
interval = "${H_INTERVAL}s"

[[targets]]
name = "lossy"
host = "$H_ADDR"
ports = [$(seq -s ', ' "$H_OPEN_LO" "$H_CLOSED_HI")]
EOF
CMDS+=("# lossy.toml: interval ${H_INTERVAL}s, one target $H_ADDR, ports = [$H_OPEN_LO, ..., $H_CLOSED_HI] listed one by one; no timeout or retries")
CMDS+=("(timed from start to /-/ready 200) ip netns exec $NS $BIN --config.file lossy.toml --web.listen-address $OURS_ADDR   # then /metrics polled every 0.1 s for $H_ROUNDS rounds")
launch_timed lossy "$TMP/lossy.toml" 120
H_FIRST=$L_TIME
nsx python3 "$TMP/bench.py" lossy-rounds "http://$OURS_ADDR/metrics" lossy "$H_ROUNDS" $((H_ROUNDS * H_INTERVAL * 4 + 60)) \
    "$H_OPEN_LO" "$H_OPEN_HI" "$H_CLOSED_LO" "$H_CLOSED_HI" >"$TMP/lossy.json" || die "(h) polling our rounds"
stop_timed
read -r H_FF H_PROBES H_MED H_MAX H_SEEN H_MISSED H_FF_SCRAPED H_WRONG <<<"$(py lossy_summary "$TMP/lossy.json")"
[ "$H_PROBES" -ge $((H_ROUNDS * H_PORTS)) ] || die "(h) only $H_PROBES probes finished, not $H_ROUNDS rounds x $H_PORTS ports"
log "  ours: $H_FF false filtered of $H_PROBES probes; rounds median $H_MED s, max $H_MAX s ($H_SEEN seen done, $H_MISSED not)"
CMDS+=("ip netns exec $NS nmap -sT -T4 -Pn -n -p$H_OPEN_LO-$H_CLOSED_HI $H_ADDR -oX nmap-lossy.xml   # x$H_ROUNDS, timed with bash's time")
H_NMAP_TIMES=() H_XMLS=()
for i in $(seq "$H_ROUNDS"); do
    xml=$TMP/nmap-lossy$i.xml
    read -r wall < <({ TIMEFORMAT='%R'; time nsx timeout 300 nmap -sT -T4 -Pn -n -p"$H_OPEN_LO-$H_CLOSED_HI" "$H_ADDR" -oX "$xml" >/dev/null; } 2>&1) \
        || die "(h) nmap"
    [ -s "$xml" ] || die "(h) nmap wrote no XML"
    H_NMAP_TIMES+=("$wall") H_XMLS+=("$xml")
done
read -r H_NFF H_NSCANNED <<<"$(py nmap_filtered "${H_XMLS[@]}")"
read -r H_NMED _ H_NMAX <<<"$(py stats "${H_NMAP_TIMES[@]}")"
log "  nmap: $H_NFF false filtered of $H_NSCANNED ports; runs median $H_NMED s, max $H_NMAX s"
nsx iptables -D INPUT -d "$H_ADDR" -p tcp --dport "$H_RANGE" -m statistic --mode random --probability "$H_LOSS" -j DROP
nsx iptables -D INPUT -s "$H_ADDR" -p tcp --sport "$H_RANGE" -m statistic --mode random --probability "$H_LOSS" -j DROP
H_PCT=$(calc "100 * $H_FF / $H_PROBES" .3f)
H_NPCT=$(calc "100 * $H_NFF / $H_NSCANNED" .3f)
if [ "$H_NFF" -gt 0 ]; then H_RATIO="$(calc "$H_PCT / $H_NPCT" .2f)x"; else H_RATIO="n/a (nmap 0)"; fi
if [ "$H_WRONG" = 0 ] && awk "BEGIN { exit !($H_PCT <= 0.1 && $H_PCT <= $H_NPCT) }"; then H_RES=pass; else H_RES=FAIL; fi
if [[ "$H_MED" =~ ^[0-9.]+$ ]]; then H_TRATIO="$(calc "$H_MED / $H_NMED" .2f)x"; else H_TRATIO=""; fi
row "h. lossy path ($H_LOSS drop each way), $H_PORTS ports (open and closed), default timing, $H_ROUNDS rounds: false filtered per probe" "$H_FF / $H_PROBES ($H_PCT%)" "$H_NFF / $H_NSCANNED ($H_NPCT%) (nmap -sT -T4, $H_ROUNDS runs)" "$H_RATIO" "<= 0.1% and <= nmap's" "$H_RES"
row "h. lossy path: round time, median / max (s)" "$H_MED / $H_MAX" "$H_NMED / $H_NMAX" "$H_TRATIO" "" "n/a"
note "h. $H_ADDR on lo; $H_OPEN_LO-$H_OPEN_HI listen (bound to $H_ADDR), $H_CLOSED_LO-$H_CLOSED_HI answer with resets; iptables drops $H_LOSS of the packets to those ports (--dport: SYNs, the client's ACKs and resets) and of those from them (--sport: SYN-ACKs, resets), independently; the exporter's web port is not matched. Ours: the $H_PORTS ports listed, interval ${H_INTERVAL}s, the default timing; one process for $H_ROUNDS rounds (the first: ready after $H_FIRST s). False filtered = port_exporter_probes_total{state=\"filtered\"} after the last round (no port is truly filtered) / every probe finished then (all states). Round time: /metrics polled every 0.1 s; a round is done when the probes are a multiple of $H_PORTS with none in flight; its time is the spread of port_last_probe_timestamp_seconds over its ports in that scrape (the first answer comes a few ms after the round starts). Rounds seen done: $H_SEEN ($H_MISSED ran into the next or were not seen); in their scrapes $H_FF_SCRAPED ports read filtered (a cross-check of the counter) and $H_WRONG in a wrong state other than filtered (must be 0). nmap: $H_ROUNDS runs of the same ports, wall times ${H_NMAP_TIMES[*]} s; its filtered ports over all runs / ports scanned."
fi # h

# ---------------------------------------------------------------------------------------------
# 2i. 1M silent pairs on schedule.
if want i; then
log "(i) $I_PAIRS silent pairs: $I_ADDRS addresses x $I_PORTS ports, interval ${I_INTERVAL}s, --probe.concurrency $I_CONC"
cmd nsx iptables -A INPUT -d "$I_NET.0/24" -p tcp -m multiport --dports "$I_OPEN_CSV" -j ACCEPT
cmd nsx iptables -A INPUT -d "$I_NET.0/24" -p tcp --syn -j DROP
{
    echo '# The default timing: no timeout or retries.'
    echo '[defaults]'
    echo "interval = \"${I_INTERVAL}s\""
    for k in $(seq "$I_ADDRS"); do
        # The last port listed: it has its series (and its last probe's time) while silent.
        printf '\n[[targets]]\nname = "fw%02d"\nhost = "%s"\nports = ["1-%d", %d]\n' "$k" "$I_NET.$k" $((I_PORTS - 1)) "$I_PORTS"
    done
} >"$TMP/silent-pairs.toml"
CMDS+=("# silent-pairs.toml: interval ${I_INTERVAL}s, $I_ADDRS targets $I_NET.1-$I_ADDRS, ports = [\"1-$((I_PORTS - 1))\", $I_PORTS] each; no timeout or retries")
CMDS+=("(timed from start to /-/ready 200) ip netns exec $NS $BIN --config.file silent-pairs.toml --web.listen-address $OURS_ADDR --probe.concurrency $I_CONC --probe.rate $I_RATE   # then /metrics every ${I_EVERY}s for ${I_INTERVAL}s")
launch_timed silent-pairs "$TMP/silent-pairs.toml" $((I_INTERVAL * 2 + 60)) --probe.concurrency "$I_CONC" --probe.rate "$I_RATE"
I_READY=$L_TIME I_PID=$L_PID
log "  first round done after $I_READY s; now one interval (${I_INTERVAL}s)"
fetch "http://$OURS_ADDR/metrics" >"$TMP/i0.metrics" || die "(i) /metrics"
c0=$(cpu_ticks "$I_PID") w0=$(date +%s.%N)
nsx python3 "$TMP/bench.py" silent-samples "http://$OURS_ADDR/metrics" "$I_INTERVAL" "$I_EVERY" 1 "$I_PORTS" >"$TMP/silent-pairs.json" \
    || die "(i) sampling"
c1=$(cpu_ticks "$I_PID") w1=$(date +%s.%N)
I_RSS=$(rss_kb "$I_PID") I_HWM=$(hwm_kb "$I_PID")
fetch "http://$OURS_ADDR/metrics" >"$TMP/i1.metrics" || die "(i) /metrics"
I_LOWERED=$(grep -c 'concurrency lowered' "$TMP/silent-pairs.log" || true)
stop_timed
nsx iptables -D INPUT -d "$I_NET.0/24" -p tcp -m multiport --dports "$I_OPEN_CSV" -j ACCEPT
nsx iptables -D INPUT -d "$I_NET.0/24" -p tcp --syn -j DROP
I_CORES=$(calc "($c1 - $c0) / $CLK / ($w1 - $w0)" .3f)
read -r I_P99 I_N <<<"$(py quantile "$TMP/i0.metrics" "$TMP/i1.metrics" port_exporter_probe_start_lateness_seconds 0.99)"
I_PROBES=$(calc "$(py metric "$TMP/i1.metrics" port_exporter_probes_total) - $(py metric "$TMP/i0.metrics" port_exporter_probes_total)" .0f)
I_FILTERED=$(calc "$(py metric "$TMP/i1.metrics" port_target_ports state=filtered)" .0f)
read -r I_COMPLETE I_LONGEST I_RUNNING I_OLDEST I_UNSEEN I_MOST I_TARGETS I_ROUNDS <<<"$(py round_spans "$TMP/silent-pairs.json")"
log "  rounds: $I_COMPLETE done (longest $I_LONGEST s), $I_RUNNING running (oldest $I_OLDEST s), $I_UNSEEN unseen; CPU $I_CORES cores, VmRSS $I_RSS kB, lateness p99 $I_P99"
I_LONG=$I_READY
if [[ "$I_LONGEST" =~ ^[0-9.]+$ ]] && awk "BEGIN { exit !($I_LONGEST > $I_LONG) }"; then I_LONG=$I_LONGEST; fi
if [ "$I_TARGETS" = "$I_ADDRS" ] && [ "$I_UNSEEN" = 0 ] && [ "$I_LOWERED" = 0 ] \
    && awk "BEGIN { exit !($I_LONG < $I_INTERVAL && $I_OLDEST < $I_INTERVAL) }"; then I_RES=pass; else I_RES=FAIL; fi
I_RSS_MB=$(calc "$I_RSS / 1024" .0f)
I_P99_MS=$(ms_or "$I_P99")
if [[ "$I_P99" == ">"* ]]; then I_LRES=FAIL; else I_LRES=$(judge "$I_P99" '<' 1); fi
row "i. $I_PAIRS silent pairs ($I_ADDRS firewalled addresses x $I_PORTS ports, interval ${I_INTERVAL}s, --probe.concurrency $I_CONC --probe.rate $I_RATE), default timing: longest round (s)" "$I_LONG (first round $I_READY)" "none (nmap has no scheduled rounds)" "" "every round < $I_INTERVAL s" "$I_RES"
row "i. CPU over one interval after the first round (cores)" "$I_CORES" "none" "" "<= 0.5 core" "$(judge "$I_CORES" '<=' 0.5)"
row "i. resident memory at the end of that interval (MB)" "$I_RSS_MB (peak $(calc "$I_HWM / 1024" .0f))" "none" "" "<= 300 MB" "$(judge "$I_RSS_MB" '<=' 300)"
row "i. probe start lateness p99 over that interval (ms)" "$I_P99_MS" "none" "" "< 1000 ms" "$I_LRES"
note "i. $I_NET.1-$I_ADDRS on lo; iptables: ACCEPT to ${I_OPEN[*]} (listeners bound to each address), DROP of every other SYN to $I_NET.0/24. Ours: $I_ADDRS targets, ports 1-$((I_PORTS - 1)) as a range and $I_PORTS listed, interval ${I_INTERVAL}s, the default timing, --probe.concurrency $I_CONC (with the fixed timing, 2 attempts of 2 s per silent pair, $I_PAIRS pairs take $(calc "$I_PAIRS * 4 / $DEF_CONC" .0f) s on the default $DEF_CONC slots, $(calc "$I_PAIRS * 4 / $I_CONC" .0f) s on $I_CONC; lowered by the fd limit: $([ "$I_LOWERED" = 0 ] && echo no || echo YES, see its log)), --probe.rate $I_RATE (the pace at which $I_CONC slots of 2 x 100 ms + 200 ms per silent pair never make a probe wait). First round (every target at once, at start): ready after $I_READY s. Then a window of $(calc "$w1 - $w0" .1f) s (one interval) from ready: $I_PROBES probes finished (pairs: $I_PAIRS; filtered at the end: $I_FILTERED), $I_N lateness observations, at most $I_MOST in flight in the samples. Rounds: /metrics every ${I_EVERY}s; per target, port_last_probe_timestamp_seconds of port 1 (open, the first probe of a round, answered at once: the round's start) and of port $I_PORTS (silent, the last to start and so the last to finish: the round's end); $I_TARGETS targets seen; $I_COMPLETE rounds seen from start to end, the first ones included (ready, $I_READY s, bounds those), in seconds: ${I_ROUNDS//,/ }; $I_RUNNING still running at the last sample (oldest $I_OLDEST s), $I_UNSEEN whose end was never sampled. The start is port 1's answer, so a round's wait for a slot before its first probe is not in its time. Lateness is the exporter's histogram: the round's delay past its tick plus every wait of the round for a slot before the probe. CPU = (utime+stime) of /proc/PID/stat over the window / wall time, the ${I_EVERY}s scrapes included; VmRSS at the end of the window, peak VmHWM $I_HWM kB."
fi # i

# ---------------------------------------------------------------------------------------------
# 2j. service = "auto" on open ports vs connect-only, same ports, same run.
if want j; then
log "(j) service = \"auto\" vs connect-only on $J_PORTS open ports ($J_LO-$J_HI, banner $J_BANNER), $J_RUNS run(s) each"
CMDS+=("ip netns exec $NS python3 $TMP/bench.py listen-banner $TMP/accepts-j 127.0.0.1 $J_LO $J_HI $J_BANNER")
ip netns exec "$NS" python3 "$TMP/bench.py" listen-banner "$TMP/accepts-j" 127.0.0.1 "$J_LO" "$J_HI" "$J_BANNER" >"$TMP/listener-j.log" 2>&1 </dev/null &
LISTENER_J=$!
PIDS+=("$LISTENER_J")
for _ in $(seq 100); do [ -s "$TMP/accepts-j" ] && break; sleep 0.1; done
[ -s "$TMP/accepts-j" ] || die "the banner listener of j did not start: $(cat "$TMP/listener-j.log")"
accepts_j() { cut -d' ' -f1 "$TMP/accepts-j"; }
count_j() { local v; v=$(py metric "$@"); if [ "$v" = n/a ]; then echo 0; else calc "$v" .0f; fi; } # absent: 0
for mode in connect auto; do
    {
        echo '[defaults]'
        echo 'interval = "1h"'
        echo 'timeout = "1s"'
        echo 'retries = 0'
        echo
        echo '[[targets]]'
        echo "name = \"$mode\""
        echo 'host = "127.0.0.1"'
        echo "ports = [\"$J_LO-$J_HI\"]"
        [ "$mode" = auto ] && echo 'service = "auto"'
    } >"$TMP/j-$mode.toml"
done
CMDS+=("# j-connect.toml: interval 1h, timeout 1s, retries 0, one target 127.0.0.1 ports = [\"$J_LO-$J_HI\"]; j-auto.toml: the same with service = \"auto\"")
CMDS+=("(timed from start to /-/ready 200, x$J_RUNS each, alternating) ip netns exec $NS $BIN --config.file j-connect.toml|j-auto.toml --web.listen-address $OURS_ADDR")
J_CONN_T=() J_CONN_C=() J_AUTO_T=() J_AUTO_C=() J_BAD=() J_LCPU=()
for run in $(seq "$J_RUNS"); do
    for mode in connect auto; do
        a0=$(accepts_j) o0=$(overflows) l0=$(cpu_ticks "$LISTENER_J")
        launch_timed "j-$mode-$run" "$TMP/j-$mode.toml" 120 # a name per run: its result file is new
        fetch "http://$OURS_ADDR/metrics" >"$TMP/j-$mode.metrics" || die "(j) /metrics"
        stop_timed
        sleep 0.3 # the listener's count is written every 0.2 s
        acc=$(($(accepts_j) - a0)) ovf=$(($(overflows) - o0)) lcpu=$(($(cpu_ticks "$LISTENER_J") - l0))
        open=$(count_j "$TMP/j-$mode.metrics" port_target_ports "target=$mode" state=open)
        ssh=$(count_j "$TMP/j-$mode.metrics" port_service_info "target=$mode" service=ssh)
        log "  $mode run $run: ready after $L_TIME s, $L_CPU CPU-s; open $open, ssh $ssh; listener accepts $acc, overflows $ovf, CPU $(calc "$lcpu / $CLK" .2f) s"
        [ "$open" = "$J_PORTS" ] && [ "$acc" -ge "$J_PORTS" ] && [ "$ovf" = 0 ] || J_BAD+=("$mode run $run: open $open, accepts $acc, overflows $ovf")
        if [ "$mode" = auto ]; then
            [ "$ssh" = "$J_PORTS" ] || J_BAD+=("auto run $run: $ssh of $J_PORTS identified as ssh")
            J_AUTO_T+=("$L_TIME") J_AUTO_C+=("$L_CPU") J_SSH=$ssh
        else
            [ "$ssh" = 0 ] || J_BAD+=("connect run $run: $ssh service rows without service")
            J_CONN_T+=("$L_TIME") J_CONN_C+=("$L_CPU")
        fi
        J_LCPU+=("$mode $(calc "$lcpu / $CLK" .2f)")
    done
done
stop "$LISTENER_J"
read -r J_CT _ _ <<<"$(py stats "${J_CONN_T[@]}")"
read -r J_CC _ _ <<<"$(py stats "${J_CONN_C[@]}")"
read -r J_AT _ _ <<<"$(py stats "${J_AUTO_T[@]}")"
read -r J_AC _ _ <<<"$(py stats "${J_AUTO_C[@]}")"
J_CT=$(calc "$J_CT" .3f) J_AT=$(calc "$J_AT" .3f) J_CC=$(calc "$J_CC" .2f) J_AC=$(calc "$J_AC" .2f)
J_CRATE=$(calc "$J_PORTS / $J_CT" .0f) J_ARATE=$(calc "$J_PORTS / $J_AT" .0f)
J_TRATIO=$(calc "$J_AT / $J_CT" .2f)
if awk "BEGIN { exit !($J_CC > 0) }"; then J_CRATIO="$(calc "$J_AC / $J_CC" .2f)x"; else J_CRATIO="n/a (connect-only 0 CPU-s)"; fi
if [ ${#J_BAD[@]} = 0 ]; then J_RES=pass; else J_RES=FAIL; fi
row "j. service = \"auto\" on $J_PORTS open ports (SSH banner) vs connect-only, same ports: first round, start to ready (s; probes/s)" "$J_AT ($J_ARATE/s)" "$J_CT ($J_CRATE/s) (ours, connect-only)" "${J_TRATIO}x" "- (the guard of the connect-only path is b-d)" "n/a"
row "j. CPU of that first round (CPU-s at ready): auto vs connect-only" "$J_AC" "$J_CC (ours, connect-only)" "$J_CRATIO" "-" "n/a"
row "j. every port open and identified as ssh, the listener kept up" "$J_SSH / $J_PORTS ssh" "$J_PORTS open" "" "all $J_PORTS, accepts >= ports, 0 overflows" "$J_RES"
note "j. A python3 listener on 127.0.0.1:$J_LO-$J_HI (one socket per port) sends \`$J_BANNER\\r\\n\` on accept and closes, so the identification is the shortest one there is: a server that speaks first, read at once. Ours: one target of the $J_PORTS ports as a range, interval 1h, timeout 1s, retries 0, --help's defaults (--probe.concurrency $DEF_CONC, --probe.rate $DEF_RATE); once with no service (connect only: no bytes sent or read) and once with service = \"auto\", a fresh process each, alternating, $J_RUNS time(s) each; figures are medians. Round time: from starting the process to the first 200 of /-/ready (the first round; includes the process start, a few ms), probes/s = ports / that time; connect-only times ${J_CONN_T[*]} s, auto ${J_AUTO_T[*]} s. CPU: utime+stime of /proc/PID/stat at ready, connect-only ${J_CONN_C[*]} s, auto ${J_AUTO_C[*]} s. Kept up: per run the listener's accepts (>= ports), the namespace's TcpExtListenOverflows+ListenDrops (0), port_target_ports{state=\"open\"} = ports, and for auto port_service_info{service=\"ssh\"} = ports; listener CPU-s per run: ${J_LCPU[*]}. No goal in the issue beyond \"identification must not slow the connect-only path\": rows b-d (no service set) are that guard; this row shows the cost of the exchange when it is asked for.$([ ${#J_BAD[@]} = 0 ] || echo " PROBLEMS: ${J_BAD[*]}.")"
fi # j

# ---------------------------------------------------------------------------------------------
# 2k. UDP: K_PORTS ports on one host, ours vs nmap -sU, same ports, same states.
if want k; then
log "(k) UDP: $K_ADDR ports $K_LO-$K_HI ($K_OPEN_N answered, $K_DROP_N dropped, $K_REJECT_N rejected, the rest closed), default timing, vs nmap -sU -T4"
# Spread over the range: open every K_PORTS/K_OPEN_N ports from +7, dropped every
# K_PORTS/K_DROP_N from +3, rejected as many, half a step after the dropped ones.
K_DSTEP=$((K_PORTS / K_DROP_N))
mapfile -t K_OPEN < <(seq $((K_LO + 7)) $((K_PORTS / K_OPEN_N)) "$K_HI" | head -n "$K_OPEN_N")
mapfile -t K_DROP < <(seq $((K_LO + 3)) "$K_DSTEP" "$K_HI" | head -n "$K_DROP_N")
mapfile -t K_REJECT < <(seq $((K_LO + 3 + K_DSTEP / 2)) $((K_PORTS / K_REJECT_N)) "$K_HI" | head -n "$K_REJECT_N")
K_DUP=$(printf '%s\n' "${K_OPEN[@]}" "${K_DROP[@]}" "${K_REJECT[@]}" | sort | uniq -d | head -3 | xargs)
[ -z "$K_DUP" ] || die "(k) port sets overlap: $K_DUP"
if [ ${#K_OPEN[@]} != "$K_OPEN_N" ] || [ ${#K_DROP[@]} != "$K_DROP_N" ] || [ ${#K_REJECT[@]} != "$K_REJECT_N" ]; then
    die "(k) the port sets do not fit $K_LO-$K_HI"
fi
K_CLOSED_N=$((K_PORTS - K_OPEN_N - K_DROP_N - K_REJECT_N))
K_OPEN_CSV=$(IFS=,; echo "${K_OPEN[*]}")
K_DROP_CSV=$(IFS=,; echo "${K_DROP[*]}")
K_REJECT_CSV=$(IFS=,; echo "${K_REJECT[*]}")
cmd nsx ip addr add "$K_ADDR/32" dev lo
spawn K_SERVER "$TMP/udp-answer.log" python3 "$TMP/bench.py" udp-answer "$TMP/answers-k" "$K_ADDR" "${K_OPEN[@]}"
for _ in $(seq 50); do [ -s "$TMP/answers-k" ] && break; sleep 0.1; done
[ -s "$TMP/answers-k" ] || die "the UDP responder of k did not start: $(cat "$TMP/udp-answer.log")"
# Every rule of the row matches -d $K_ADDR -p udp; multiport takes 15 ports a rule.
cmd nsx iptables -N "$K_CHAIN"
cmd nsx iptables -A INPUT -d "$K_ADDR" -p udp -j "$K_CHAIN"
k_rules() { # k_rules ACTION PORTS...: the chain's rules for those ports, 15 a rule
    local action=$1 chunk
    shift
    while read -r chunk; do
        # shellcheck disable=SC2086 # ACTION is several words on purpose
        nsx iptables -A "$K_CHAIN" -d "$K_ADDR" -p udp -m multiport --dports "$chunk" -j $action
    done < <(printf '%s\n' "$@" | xargs -n 15 | tr ' ' ,)
}
k_rules DROP "${K_DROP[@]}"
k_rules "REJECT --reject-with icmp-admin-prohibited" "${K_REJECT[@]}"
CMDS+=("ip netns exec $NS iptables -A $K_CHAIN -d $K_ADDR -p udp -m multiport --dports P1,...,P15 -j DROP   # the $K_DROP_N dropped ports, 15 a rule: $K_DROP_CSV")
CMDS+=("ip netns exec $NS iptables -A $K_CHAIN -d $K_ADDR -p udp -m multiport --dports P1,...,P15 -j REJECT --reject-with icmp-admin-prohibited   # the $K_REJECT_N rejected ports: $K_REJECT_CSV")
{
    echo '# The default timing: no timeout or retries.'
    echo '[defaults]'
    echo 'interval = "1h"'
    echo
    echo '[[targets]]'
    echo 'name = "udp"'
    echo "host = \"$K_ADDR\""
    echo 'protocol = "udp"'
    echo '# Listed one by one: every port has its series (a range port has them only while open).'
    echo "ports = [$(seq -s ', ' "$K_LO" "$K_HI")]"
} >"$TMP/udp.toml"
CMDS+=("# udp.toml: interval 1h, one target $K_ADDR, protocol = \"udp\", ports = [$K_LO, ..., $K_HI] listed one by one; no timeout or retries")
CMDS+=("(timed from start to /-/ready 200) ip netns exec $NS $BIN --config.file udp.toml --web.listen-address $OURS_ADDR")
K_ICMP=(OutDestUnreachs OutRateLimitGlobal OutRateLimitHost)
read -r K_U0 K_G0 K_H0 <<<"$(nsx python3 "$TMP/bench.py" icmp "${K_ICMP[@]}")"
K_A0=$(cat "$TMP/answers-k")
launch_timed udp "$TMP/udp.toml" "$K_LIMIT"
K_TIME=$L_TIME K_CPU=$L_CPU
fetch "http://$OURS_ADDR/metrics" >"$TMP/udp.metrics" || die "(k) /metrics"
stop_timed
sleep 0.3 # the responder's count is written every 0.2 s
read -r K_U1 K_G1 K_H1 <<<"$(nsx python3 "$TMP/bench.py" icmp "${K_ICMP[@]}")"
K_A1=$(cat "$TMP/answers-k")
log "  ours: ready after $K_TIME s ($K_CPU CPU-s)"
CMDS+=("ip netns exec $NS nmap -sU -T4 -Pn -n -p$K_LO-$K_HI $K_ADDR -oX nmap-udp.xml   # timed with bash's time")
read -r K_NMAP K_NMAP_USER K_NMAP_SYS < <({ TIMEFORMAT='%R %U %S'; time nsx timeout "$K_LIMIT" nmap -sU -T4 -Pn -n -p"$K_LO-$K_HI" "$K_ADDR" -oX "$TMP/nmap-udp.xml" >/dev/null; } 2>&1) \
    || die "(k) nmap"
[ -s "$TMP/nmap-udp.xml" ] || die "(k) nmap wrote no XML"
sleep 0.3
read -r K_U2 K_G2 K_H2 <<<"$(nsx python3 "$TMP/bench.py" icmp "${K_ICMP[@]}")"
K_A2=$(cat "$TMP/answers-k")
py udp_compare "$TMP/udp.metrics" "$TMP/nmap-udp.xml" udp "$K_LO" "$K_HI" "$K_OPEN_CSV" "$K_DROP_CSV" "$K_REJECT_CSV" \
    >"$TMP/udp-compare.txt" || die "(k) comparing the states"
read -r K_DIFF K_OURS_WRONG K_NMAP_WRONG K_OURS_NONE K_NMAP_NONE <"$TMP/udp-compare.txt"
K_OURS_COUNTS=$(sed -n 2p "$TMP/udp-compare.txt")
K_NMAP_COUNTS=$(sed -n 3p "$TMP/udp-compare.txt")
K_DIFF_PORTS=$(sed -n 4p "$TMP/udp-compare.txt")
K_WRONG_PORTS=$(sed -n 5p "$TMP/udp-compare.txt")
log "  nmap: $K_NMAP s; ports differing: $K_DIFF (ours unlike the setup: $K_OURS_WRONG, nmap's: $K_NMAP_WRONG)"
stop "$K_SERVER"
nsx iptables -D INPUT -d "$K_ADDR" -p udp -j "$K_CHAIN"
nsx iptables -F "$K_CHAIN"
nsx iptables -X "$K_CHAIN"
nsx ip addr del "$K_ADDR/32" dev lo
k_delta() { if [[ "$1$2" =~ ^[0-9]+$ ]]; then echo $(($2 - $1)); else echo n/a; fi; }
K_RATIO=$(calc "$K_TIME / $K_NMAP" .2f)
row "k. UDP host $K_ADDR, $K_PORTS ports ($K_OPEN_N open, $K_DROP_N dropped, $K_REJECT_N rejected admin-prohibited, $K_CLOSED_N closed), default timing, one round: start to ready (s)" "$K_TIME" "$K_NMAP (nmap -sU -T4)" "${K_RATIO}x" "- (none in the issue)" "n/a"
row "k. UDP: ports whose state differs from nmap -sU's" "$K_DIFF of $K_PORTS ($K_OURS_COUNTS)" "$K_NMAP_COUNTS" "" "0" "$(judge "$K_DIFF" '==' 0)"
note "k. $K_ADDR on lo; ports $K_LO-$K_HI: $K_OPEN_N answered by a python3 UDP responder bound to $K_ADDR (any datagram, the empty one included, gets a reply: open) at ${K_OPEN[*]}; $K_DROP_N dropped (iptables DROP: open|filtered) at every ${K_DSTEP}th port from $((K_LO + 3)); $K_REJECT_N rejected (REJECT --reject-with icmp-admin-prohibited: filtered) half a step after those; the other $K_CLOSED_N bound by nothing (ICMP port unreachable: closed). The rules sit in chain $K_CHAIN, jumped to for -d $K_ADDR -p udp, and are removed after the row with the address. On the namespace's lo the kernel does not rate-limit ICMP errors (loopback is exempt from net.ipv4.icmp_ratelimit and icmp_msgs_per_sec), so every closed and rejected port answers at once, every time, which a remote host's kernel would not (one error a second, a burst of 50, by default): this row is the best case for both tools, and it prices the silent ports' retries; errors the kernel withheld during our round $(k_delta "$K_G0" "$K_G1") (OutRateLimitGlobal) + $(k_delta "$K_H0" "$K_H1") (OutRateLimitHost), during nmap's $(k_delta "$K_G1" "$K_G2") + $(k_delta "$K_H1" "$K_H2"); ICMP unreachables sent during ours $(k_delta "$K_U0" "$K_U1"), during nmap's $(k_delta "$K_U1" "$K_U2"). Ours: one target, protocol = \"udp\", the $K_PORTS ports listed (every one has its series), interval 1h (one round), the default timing (--help's defaults, --probe.concurrency $DEF_CONC, --probe.rate $DEF_RATE); time from starting the process to the first 200 of /-/ready (the first round, as in g), $K_CPU CPU-s at ready; datagrams the responder answered during it: $((K_A1 - K_A0)). nmap: \`nmap -sU -T4 -Pn -n -p$K_LO-$K_HI $K_ADDR\`, wall time of one run, CPU (user+sys) $(calc "$K_NMAP_USER + $K_NMAP_SYS" .2f) s, its own elapsed $(py nmap_elapsed "$TMP/nmap-udp.xml") s; datagrams answered: $((K_A2 - K_A1)). States: ours from port_state{target=\"udp\",protocol=\"udp\",...} = 1 on /metrics after the round, nmap's from its XML (listed ports, and folded ones from <extrareasons ports>), nmap's open|filtered read as our open|filtered and its filtered as our filtered; $K_DIFF ports differ$([ "$K_DIFF" = 0 ] || echo " ($K_DIFF_PORTS)"); unlike the setup: ours $K_OURS_WRONG, nmap's $K_NMAP_WRONG$([ "$K_OURS_WRONG$K_NMAP_WRONG" = 00 ] || echo " ($K_WRONG_PORTS)"); without a state: ours $K_OURS_NONE, nmap's $K_NMAP_NONE. No goal for the time: the issue asks for the comparison and sets no number; the states must agree."
fi # k

# ---------------------------------------------------------------------------------------------
# 3. The report.
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
report() {
    echo "## port_exporter benchmark ($MODE mode), $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "Machine: $(nproc) cores, kernel $(uname -r), CPU $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), memory $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo); load average $LOAD_START at the start, $LOAD_END at the end (a shared machine: figures may be noisy). Run took $(($(date +%s) - T_START)) s."
    echo
    if [ ${#SKIPPED[@]} = 0 ]; then
        echo "Rows run: all (${RAN[*]})."
    else
        echo "Rows run: ${RAN[*]} (--rows $ROWS_ARG$([ -z "$IMPLIED_TXT" ] || echo "; implied: $IMPLIED_TXT")); not run, so not in the table: ${SKIPPED[*]}."
    fi
    echo
    echo "Versions: ours \`$("$BIN" --version)\` (--probe.concurrency default $DEF_CONC, --probe.rate default $DEF_RATE); blackbox \`$(prometheus-blackbox-exporter --version 2>&1 | head -1)\`; \`$(nmap --version | head -1)\`; \`$(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)\`."
    echo
    echo "Commands (namespace $NS, files in a temp dir):"
    echo
    echo '```'
    printf '%s\n' "${CMDS[@]}"
    echo '```'
    echo
    echo "| figure | ours | peer | ratio | goal | pass/fail |"
    echo "|---|---|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "Notes:"
    echo
    printf -- '- %s\n' "${NOTES[@]}" | sed 's/^-    - /    - /'
    echo
    if [ "$FAILED_GOALS" -gt 0 ]; then
        echo "$FAILED_GOALS goal(s) FAILED$([ "$MODE" = smoke ] && echo " (smoke mode: reported only; sizes are tiny, so the figures mean nothing)")."
    else
        echo "Every goal judged passed."
    fi
}
FAILED_GOALS=$(printf '%s\n' "${ROWS[@]}" | grep -c '| FAIL |$' || true)
report >"$TMP/report.md"
cat "$TMP/report.md"
[ -n "$OUT" ] && cp "$TMP/report.md" "$OUT"
if [ "$MODE" = full ] && [ "$FAILED_GOALS" -gt 0 ]; then exit 3; fi
exit 0
