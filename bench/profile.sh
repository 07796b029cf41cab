#!/usr/bin/env bash
# bench/profile.sh: where heptap's relay CPU goes, by perf (Debian's linux-perf), as flame
# graphs (SVG, inferno) and a flat top list, for the two loads BENCHMARKS.md compares at equal CPU:
#
#   rr       SIP request/response, 50 connections, closed loop (bench/run.sh's rr --max)
#   connrate 16 clients looping connect, one request/response, close
#
# each with tracing on (connection events and every SIP message, HEP3 over TCP, and over UDP)
# and with tracing off. heptap runs one worker pinned to RELAY_CPUS (default 0); the responder,
# the HEP sink and the load tool run on LOAD_CPUS (default 1), as in bench/run.sh.
#
#   bench/profile.sh                              # every load x mode, 8 s each
#   MODES="on-tcp off" LOADS=rr bench/profile.sh  # a subset
#
# Output in bench/results/profile/: <load>-<mode>.svg (flame graph: the relay's threads, stacks
# by DWARF unwinding), <load>-<mode>.txt (self time per symbol, top 40, and the load tool's
# figures for the profiled run). KEEP=1 keeps the perf data and folded stacks. Needs root (perf on another process) and inferno
# (`cargo install inferno`). Profiling slows the relay: the rates printed are not benchmarks.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-8}
RELAY_CPUS=${RELAY_CPUS:-0}
LOAD_CPUS=${LOAD_CPUS:-1}
MODES=${MODES:-on-tcp on-udp off}
LOADS=${LOADS:-rr connrate}
FREQ=${FREQ:-1999}
PORT_BASE=${PORT_BASE:-18000}
OUT=${OUT:-$ROOT/bench/results/profile}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
for tool in perf inferno-collapse-perf inferno-flamegraph; do
    command -v "$tool" >/dev/null || { log "$tool is missing (apt-get install linux-perf; cargo install inferno)"; exit 1; }
done

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    log "building (release)"
    (cd "$ROOT" && cargo build --release --locked -q -p heptap -p heptap-bench)
fi
HEPTAP=$CARGO_TARGET_DIR/release/heptap
B=$CARGO_TARGET_DIR/release/heptap-bench

WORK=$(mktemp -d /tmp/heptap-profile.XXXXXX)
declare -A PID=()
cleanup() {
    local p
    for p in "${PID[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ ${KEEP:-0} == 1 ]]; then log "kept: $WORK (perf data and folded stacks)"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || true
mkdir -p "$OUT"

UPSTREAM=$((PORT_BASE + 1))
LISTEN=$((PORT_BASE + 2))
HEP_PORT=$((PORT_BASE + 3))

wait_port() {
    local i
    for i in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    log "nothing listens on port $1"
    exit 1
}

taskset -c "$LOAD_CPUS" "$B" echo-server --listen "127.0.0.1:$UPSTREAM" >"$WORK/echo.log" 2>&1 &
PID[echo]=$!
taskset -c "$LOAD_CPUS" "$B" hep-sink --listen "127.0.0.1:$HEP_PORT" --stats "$WORK/hep.stats" \
    >"$WORK/sink.log" 2>&1 &
PID[sink]=$!
wait_port "$UPSTREAM"

config() { # mode
    local on=true transport=tcp
    case $1 in
    on-tcp) ;;
    on-udp) transport=udp ;;
    off) on=false ;;
    esac
    cat <<EOF
[log]
level = "error"

[service]
workers = 1

[hep.ids]
col = "[col] 127.0.0.1:$HEP_PORT; transport=$transport"

[tracer]
trace_on = $on
trace_id = ["[tid]uri=hep:col"]

[[listener]]
name = "tcp"
proto = "tcp"
listen = "127.0.0.1:$LISTEN"
upstream = "127.0.0.1:$UPSTREAM"
sip_trace_id = "tid"
max_connections = 20000

[net.tcp]
trace_on = $on
trace_destination = "col"

[mi]
fifo_name = "$WORK/fifo"
reply_dir = "$WORK/"
http_listen = ""
EOF
}

for load in $LOADS; do
    for mode in $MODES; do
        config "$mode" >"$WORK/heptap.toml"
        taskset -c "$RELAY_CPUS" "$HEPTAP" serve -c "$WORK/heptap.toml" >"$WORK/heptap.log" 2>&1 &
        PID[heptap]=$!
        wait_port "$LISTEN"
        case $load in
        rr) args=(rr --max --conns 50) ;;
        connrate) args=(connrate --concurrency 16 --max-conns 1000000) ;;
        esac
        log "$load $mode: perf record for ${DURATION}s"
        taskset -c "$LOAD_CPUS" "$B" "${args[@]}" --target "127.0.0.1:$LISTEN" --label "$mode" \
            --cpu-pid "${PID[heptap]}" --duration "$((DURATION + 2))" \
            --out "$WORK/result.jsonl" >"$WORK/load.log" 2>&1 &
        PID[load]=$!
        sleep 1 # let the load reach its pace before sampling (not a synchronisation)
        perf record -q -F "$FREQ" --call-graph dwarf,32768 -p "${PID[heptap]}" -o "$WORK/perf.data" \
            -- sleep "$DURATION" 2>"$WORK/perf.log" || { log "perf failed: $(tail -n 2 "$WORK/perf.log")"; exit 1; }
        wait "${PID[load]}" || log "load tool failed: $(tail -n 1 "$WORK/load.log")"
        unset "PID[load]"
        cp "$WORK/perf.data" "$WORK/$load-$mode.perf.data"
        kill "${PID[heptap]}"
        wait "${PID[heptap]}" 2>/dev/null || true
        unset "PID[heptap]"
        perf script -i "$WORK/perf.data" 2>/dev/null | inferno-collapse-perf >"$WORK/$load-$mode.folded"
        inferno-flamegraph --minwidth 0.5 --title "heptap, $load, tracing $mode (1 worker, pinned)" \
            <"$WORK/$load-$mode.folded" >"$OUT/$load-$mode.svg"
        {
            echo "heptap $(cd "$ROOT" && git rev-parse --short HEAD), $load, tracing $mode: self time per symbol"
            echo "load tool (slowed by profiling): $(tail -n 1 "$WORK/result.jsonl" 2>/dev/null)"
            echo
            echo "by object:"
            perf report -i "$WORK/perf.data" --no-children --sort dso --stdio -g none -F overhead,dso \
                2>/dev/null | grep -v '^#' | grep -v '^$' | head -n 8
            echo
            echo "by symbol:"
            perf report -i "$WORK/perf.data" --no-children --sort symbol --percent-limit 0.4 \
                --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | sed 's/[ -]*$//' | head -n 40
            echo
            echo "heptap's own code, inclusive (children), top 30:"
            perf report -i "$WORK/perf.data" --children --sort symbol --dsos heptap --percent-limit 1 \
                --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | sed 's/[ -]*$//' | head -n 30
        } >"$OUT/$load-$mode.txt"
        log "  $OUT/$load-$mode.svg, $OUT/$load-$mode.txt"
    done
done
