#!/usr/bin/env bash
# bench/run.sh: heptap's relay side by side with HAProxy, nginx and a direct connection, on
# loopback, every relay at equal CPU.
#
#   bench/run.sh                       # build, run everything once, update BENCHMARKS.md
#   ROUNDS=5 DURATION=5 bench/run.sh   # more and longer repetitions (medians are reported)
#   RELAY_THREADS=2 RELAY_CPUS=0-1 LOAD_CPUS=2-5 bench/run.sh
#                                      # two threads per relay, on a machine with cores to spare
#
# CPU layout: every relay runs RELAY_THREADS threads (default 1: heptap `[service] workers`,
# HAProxy `nbthread`, nginx `worker_processes`) pinned with taskset to RELAY_CPUS (default the
# first CPU this shell may use, 0); everything else (the responder, the HEP sink, every load
# tool, the /metrics scraper) is pinned to LOAD_CPUS (default every other CPU this shell may
# use: `1` on 2 cores). With no CPU left over (one core, or RELAY_CPUS taking them all) the load
# shares the relay's cores, and the report says so. The relays take turns, never loaded at once.
#
# Targets, each on its own port, all relaying to the same SIP responder (heptap-bench
# echo-server, one thread):
#   heptap-on   heptap with connection events ([net.tcp], [net.tls]) and SIP tracing on, HEP over
#               UDP to a counting sink (heptap-bench hep-sink)
#   heptap-tcp  the same as heptap-on with HEP over TCP (one connection, frames batched) to the
#               same sink: on loopback a UDP datagram costs heptap the sink's receive path too
#   heptap-off  the same config with trace_on = false everywhere
#   heptap-spool (rr --max only) heptap-tcp's config with its collector down (nothing listens on
#               its port) and the disk spool on ([hep] spool_dir in the work directory): the
#               relay's max rate while every HEP packet goes to disk, against heptap-tcp's
#   haproxy     HAProxy from the Debian package, mode tcp, nbthread RELAY_THREADS
#   nginx       nginx from the Debian package with its stream module (libnginx-mod-stream),
#               worker_processes RELAY_THREADS; with one, master_process off, so the process
#               measured is the one doing the work (with more, the master and its workers are
#               measured together)
#   direct      the responder itself (no relay)
# over plain TCP and over TLS (terminated by the relay with a self-signed ECDSA certificate, the
# upstream leg plain TCP; the client offers TLS 1.3 AES-128-GCM only, no resumption).
#
# Measurements (heptap-bench subcommands, each bounded in time and count):
#   idle      10,000 connections, one request/response each, held idle: relay VmRSS delta / count
#             (fresh relay processes, first thing; n/a for direct)
#   bulk      one connection, 64 KiB writes for DURATION s, MB/s counted by the responder
#   rr        600-byte request, 400-byte reply, 50 connections, 5,000 msg/s open loop: p50/p99
#             from the intended send time
#   rr --max  the same 50 connections closed loop: messages/s and p99
#   connrate  16 clients looping connect, one request/response, close (the client closes
#             first): connections/s, at most 15,000 connections per measurement
#   udp-floor (with rr_max, once per round) the cheapest UDP sender there is, 600-byte
#             datagrams to the same HEP sink at 100,000/s: its CPU per datagram is the floor
#             under what HEP over UDP costs any sender on this machine
# Every measurement also records the relay's CPU time (/proc/PID/stat) and, for heptap-on and
# heptap-tcp, the HEP packets the sink received and the sink's own CPU time (reported apart:
# relay CPU never includes it). Targets run back to back per measurement (order rotated every
# round) so they share the machine's noise; compare the ratios rather than absolute figures.
#
# Environment: DURATION (s, default 3), ROUNDS (default 3), IDLE_CONNS (default 10000),
# RELAY_THREADS, RELAY_CPUS and LOAD_CPUS (the CPU layout above; CPU lists as taskset -c takes),
# NICE (default -10: every process of the benchmark runs at this niceness, so that other jobs
# on a shared machine, such as compilers at niceness 0, disturb it less; 0 to leave it),
# PORT_BASE (default 17000), BENCH_MD (default BENCHMARKS.md at the repo root),
# REV_NOTE (what to print as the heptap revision, default from git),
# MEASURE (default "idle bulk rr rr_max connrate": a subset for quick comparisons while
# working), PROTOS (default "tcp tls"),
# SCRAPE (default 0: seconds between scrapes of every heptap relay's GET /metrics, on its
# [mi] metrics_listen, during the measurements, as Prometheus would; 0: not scraped),
# SKIP_BUILD=1 (use the binaries already in $CARGO_TARGET_DIR/release), KEEP=1 (keep the work
# directory with configs, logs and results), POSTSCRIPT (a Markdown file appended to the section).
# Needs root for apt-get (HAProxy and nginx are installed if missing) and for raising `ulimit -n`.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-3}
ROUNDS=${ROUNDS:-3}
IDLE_CONNS=${IDLE_CONNS:-10000}
NICE=${NICE:--10}

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# --- CPU layout ------------------------------------------------------------------------------
# Every relay gets the same threads on the same cores, so rates and CPU compare at equal CPU:
# heptap `[service] workers`, HAProxy `nbthread` and nginx `worker_processes` are RELAY_THREADS,
# each relay is pinned to RELAY_CPUS with taskset; the load side gets the other cores.
expand_cpus() { # "0-2,5" -> one CPU per line
    local part
    for part in ${1//,/ }; do
        if [[ $part == *-* ]]; then seq "${part%-*}" "${part#*-}"; else echo "$part"; fi
    done
}
ALLOWED_CPUS=$(awk '/^Cpus_allowed_list:/ {print $2}' /proc/self/status)
RELAY_THREADS=${RELAY_THREADS:-1}
RELAY_CPUS=${RELAY_CPUS:-$(expand_cpus "$ALLOWED_CPUS" | head -n 1)}
if [[ -z ${LOAD_CPUS:-} ]]; then
    LOAD_CPUS=$(expand_cpus "$ALLOWED_CPUS" | { grep -vxF -f <(expand_cpus "$RELAY_CPUS") || true; } | paste -sd, -)
    if [[ -z $LOAD_CPUS ]]; then
        log "no CPU left for the load beside the relays' ($RELAY_CPUS of $ALLOWED_CPUS, $(nproc) in all): the load shares cores $RELAY_CPUS with the relay"
        LOAD_CPUS=$RELAY_CPUS
    fi
fi
# The load's cores that are also the relay's (then the report says they shared).
SHARED_CPUS=$(expand_cpus "$LOAD_CPUS" | { grep -xF -f <(expand_cpus "$RELAY_CPUS") || true; } | paste -sd, -)
RELAY_NCPUS=$(expand_cpus "$RELAY_CPUS" | wc -l)
if [[ $RELAY_THREADS -gt $RELAY_NCPUS ]]; then
    log "RELAY_THREADS=$RELAY_THREADS on $RELAY_NCPUS core(s) ($RELAY_CPUS): the relay's threads take turns on them"
fi
PORT_BASE=${PORT_BASE:-17000}
BENCH_MD=${BENCH_MD:-$ROOT/BENCHMARKS.md}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
SCRAPE=${SCRAPE:-0}
COMMAND="$(for v in DURATION ROUNDS IDLE_CONNS NICE SCRAPE RELAY_THREADS RELAY_CPUS LOAD_CPUS; do printf '%s=%s ' "$v" "${!v}"; done)"
[[ -n ${MEASURE:-} ]] && COMMAND+="MEASURE=\"$MEASURE\" "
[[ -n ${PROTOS:-} ]] && COMMAND+="PROTOS=\"$PROTOS\" "
COMMAND+="bench/run.sh"
IDLE_ASKED=$IDLE_CONNS
MEASURE=${MEASURE:-idle bulk rr rr_max connrate}
PROTOS=${PROTOS:-tcp tls}
wanted() { [[ " $MEASURE " == *" $1 "* ]]; }

WORK=$(mktemp -d /tmp/relay-bench.XXXXXX)
declare -A PID=()
cleanup() {
    local p
    for p in "${PID[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ ${KEEP:-0} == 1 ]]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# --- prerequisites ---------------------------------------------------------------------------
# Debian builds nginx's stream module as a package of its own (libnginx-mod-stream).
NGINX_STREAM_MODULE=/usr/lib/nginx/modules/ngx_stream_module.so
nginx_has_stream() {
    [[ -e $NGINX_STREAM_MODULE ]] || nginx -V 2>&1 | grep -qE -- '--with-stream( |$)'
}
MISSING=()
command -v haproxy >/dev/null || MISSING+=(haproxy)
{ command -v nginx >/dev/null && nginx_has_stream; } || MISSING+=(nginx libnginx-mod-stream)
if [[ ${#MISSING[@]} -gt 0 ]]; then
    log "installing ${MISSING[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${MISSING[@]}" >/dev/null
fi
# 10,000 idle connections: the relay holds two sockets for each, the client and responder one.
# Without CAP_SYS_RESOURCE (containers) the hard limit stays: then hold as many as fit.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
FIT=$(((NOFILE - 200) / 2))
if [[ $IDLE_CONNS -gt $FIT ]]; then
    log "ulimit -n is $NOFILE (hard limit): idle test with $FIT connections instead of $IDLE_CONNS"
    IDLE_CONNS=$FIT
fi
HAPROXY_MAXCONN=$(((NOFILE - 100) / 2))
[[ $HAPROXY_MAXCONN -gt 40000 ]] && HAPROXY_MAXCONN=40000
# nginx counts both legs of a relayed connection and allocates its whole table at start (outside
# the idle test's before/after difference): enough for the idle test, with room for the rest.
NGINX_CONNS=$((2 * IDLE_CONNS + 1024))
[[ $NGINX_CONNS -gt $((NOFILE - 100)) ]] && NGINX_CONNS=$((NOFILE - 100))

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    log "building (release)"
    (cd "$ROOT" && cargo build --release --locked -q -p heptap -p heptap-bench)
fi
HEPTAP=$CARGO_TARGET_DIR/release/heptap
B=$CARGO_TARGET_DIR/release/heptap-bench

# Everything started from here on (relays, responder, sink, load tools) inherits the niceness.
if [[ $NICE != 0 ]]; then
    renice -n "$NICE" -p $$ >/dev/null || log "renice $NICE failed: running at the current niceness"
fi

# --- ports -----------------------------------------------------------------------------------
declare -A UPSTREAM=([heptap-on]=$((PORT_BASE + 1)) [heptap-off]=$((PORT_BASE + 2))
    [haproxy]=$((PORT_BASE + 3)) [direct]=$((PORT_BASE + 4)) [heptap-tcp]=$((PORT_BASE + 5))
    [heptap-spool]=$((PORT_BASE + 6)) [nginx]=$((PORT_BASE + 7)))
declare -A PORT_tcp=([heptap-on]=$((PORT_BASE + 101)) [heptap-off]=$((PORT_BASE + 201))
    [haproxy]=$((PORT_BASE + 301)) [direct]=$((PORT_BASE + 4)) [heptap-tcp]=$((PORT_BASE + 501))
    [heptap-spool]=$((PORT_BASE + 601)) [nginx]=$((PORT_BASE + 701)))
declare -A PORT_tls=([heptap-on]=$((PORT_BASE + 111)) [heptap-off]=$((PORT_BASE + 211))
    [haproxy]=$((PORT_BASE + 311)) [direct]=$((PORT_BASE + 14)) [heptap-tcp]=$((PORT_BASE + 511))
    [heptap-spool]=$((PORT_BASE + 611)) [nginx]=$((PORT_BASE + 711)))
RELAYS=(heptap-on heptap-tcp heptap-off haproxy nginx)
# The processes whose CPU and memory are a relay's (its PID, or nginx's master and workers).
declare -A RELAY_PIDS=()
# Each heptap's [mi] metrics_listen (scraped when SCRAPE is set).
declare -A METRICS_PORT=([heptap-on]=$((PORT_BASE + 951)) [heptap-tcp]=$((PORT_BASE + 952))
    [heptap-off]=$((PORT_BASE + 953)) [heptap-spool]=$((PORT_BASE + 954)))
# Started only for rr --max (see heptap-spool above).
SPOOL_RELAY=heptap-spool
HEP_PORT=$((PORT_BASE + 900))
# Nothing ever listens here: heptap-spool's collector is down for the whole run.
HEP_DOWN_PORT=$((PORT_BASE + 901))
HEP_STATS=$WORK/hep.stats
RESULTS=$WORK/results.jsonl
PKI=$WORK/pki

wait_port() {
    local i
    for i in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    log "nothing listens on port $1; logs in $WORK"
    KEEP=1
    exit 1
}

# --- configs ---------------------------------------------------------------------------------
heptap_config() { # name trace_on hep_transport [hep_port [extra [hep] keys]]
    local name=$1 on=$2 transport=$3 hep_port=${4:-$HEP_PORT} hep_extra=${5:-}
    mkdir -p "$WORK/$name"
    cat >"$WORK/$name.toml" <<EOF
[log]
level = "error"

[service]
workers = $RELAY_THREADS

[hep]
$hep_extra

[hep.ids]
col = "[col] 127.0.0.1:$hep_port; transport=$transport"

[tracer]
trace_on = $on
trace_id = ["[tid]uri=hep:col"]

[[listener]]
name = "tcp"
proto = "tcp"
listen = "127.0.0.1:${PORT_tcp[$name]}"
upstream = "127.0.0.1:${UPSTREAM[$name]}"
sip_trace_id = "tid"
max_connections = 20000

[[listener]]
name = "tls"
proto = "tls"
listen = "127.0.0.1:${PORT_tls[$name]}"
upstream = "127.0.0.1:${UPSTREAM[$name]}"
sip_trace_id = "tid"
max_connections = 20000
tls = { cert_file = "$PKI/cert.pem", key_file = "$PKI/key.pem" }

[net.tcp]
trace_on = $on
trace_destination = "col"

[net.tls]
trace_on = $on
trace_destination = "col"

[mi]
fifo_name = "$WORK/$name/fifo"
reply_dir = "$WORK/$name/"
http_listen = ""
metrics_listen = "127.0.0.1:${METRICS_PORT[$name]}"
EOF
    "$HEPTAP" check-config -c "$WORK/$name.toml" >/dev/null
}

cat >"$WORK/haproxy.cfg" <<EOF
global
    nbthread $RELAY_THREADS
    maxconn $HAPROXY_MAXCONN
    # no logging: heptap runs at level error and logs nothing either

defaults
    mode tcp
    maxconn $HAPROXY_MAXCONN
    timeout connect 5s
    timeout client 1h
    timeout server 1h

frontend sip_tcp
    bind 127.0.0.1:${PORT_tcp[haproxy]}
    default_backend responder

frontend sip_tls
    bind 127.0.0.1:${PORT_tls[haproxy]} ssl crt $PKI/combined.pem
    default_backend responder

backend responder
    server responder 127.0.0.1:${UPSTREAM[haproxy]}
EOF

# One thread: no master, the single process is the worker the load tool measures. More: a master
# and RELAY_THREADS workers, measured together.
if [[ $RELAY_THREADS == 1 ]]; then NGINX_MASTER=off; else NGINX_MASTER=on; fi
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx.conf" <<EOF
$([[ -e $NGINX_STREAM_MODULE ]] && echo "load_module $NGINX_STREAM_MODULE;" || true)
daemon off;
master_process $NGINX_MASTER;
worker_processes $RELAY_THREADS;
worker_rlimit_nofile $NOFILE;
pid $WORK/nginx/nginx.pid;
# no access log (stream has none by default): heptap runs at level error and logs nothing either
error_log stderr error;

events {
    worker_connections $NGINX_CONNS;
}

stream {
    proxy_connect_timeout 5s;
    proxy_timeout 1h;
    # Pass a FIN on and keep the other direction open, as HAProxy and heptap do (bulk
    # half-closes, then reads the responder's byte count); nginx closes both by default.
    proxy_half_close on;

    server {
        listen 127.0.0.1:${PORT_tcp[nginx]};
        proxy_pass 127.0.0.1:${UPSTREAM[nginx]};
    }

    server {
        listen 127.0.0.1:${PORT_tls[nginx]} ssl;
        ssl_certificate $PKI/cert.pem;
        ssl_certificate_key $PKI/key.pem;
        ssl_protocols TLSv1.3;
        proxy_pass 127.0.0.1:${UPSTREAM[nginx]};
    }
}
EOF
# Prefix and temporary paths in the work directory; start-up errors to stderr (nginx.log).
NGINX=(nginx -p "$WORK/nginx/" -e stderr -c "$WORK/nginx.conf")

start_relays() {
    taskset -c "$RELAY_CPUS" "$HEPTAP" serve -c "$WORK/heptap-on.toml" >>"$WORK/heptap-on.log" 2>&1 &
    PID[heptap-on]=$!
    taskset -c "$RELAY_CPUS" "$HEPTAP" serve -c "$WORK/heptap-tcp.toml" >>"$WORK/heptap-tcp.log" 2>&1 &
    PID[heptap-tcp]=$!
    taskset -c "$RELAY_CPUS" "$HEPTAP" serve -c "$WORK/heptap-off.toml" >>"$WORK/heptap-off.log" 2>&1 &
    PID[heptap-off]=$!
    taskset -c "$RELAY_CPUS" haproxy -f "$WORK/haproxy.cfg" -db >>"$WORK/haproxy.log" 2>&1 &
    PID[haproxy]=$!
    taskset -c "$RELAY_CPUS" "${NGINX[@]}" >>"$WORK/nginx.log" 2>&1 &
    PID[nginx]=$!
    local t
    for t in "${RELAYS[@]}"; do
        wait_port "${PORT_tcp[$t]}"
        wait_port "${PORT_tls[$t]}"
        RELAY_PIDS[$t]=${PID[$t]}
    done
    if [[ $NGINX_MASTER == on ]]; then
        local i workers=
        for i in $(seq 100); do
            workers=$(pgrep -P "${PID[nginx]}" | paste -sd' ' -) || true
            [[ $(wc -w <<<"$workers") -ge $RELAY_THREADS ]] && break
            sleep 0.1
        done
        RELAY_PIDS[nginx]="${PID[nginx]} $workers"
    fi
}

start_spool_relay() {
    taskset -c "$RELAY_CPUS" "$HEPTAP" serve -c "$WORK/$SPOOL_RELAY.toml" >>"$WORK/$SPOOL_RELAY.log" 2>&1 &
    PID[$SPOOL_RELAY]=$!
    wait_port "${PORT_tcp[$SPOOL_RELAY]}"
    wait_port "${PORT_tls[$SPOOL_RELAY]}"
    RELAY_PIDS[$SPOOL_RELAY]=${PID[$SPOOL_RELAY]}
}

stop_relays() {
    local t
    for t in "${RELAYS[@]}" "$SPOOL_RELAY"; do
        # heptap-spool only runs for rr --max.
        [[ -n ${PID[$t]:-} ]] || continue
        kill "${PID[$t]}" 2>/dev/null || true
        wait "${PID[$t]}" 2>/dev/null || true
        unset "PID[$t]" "RELAY_PIDS[$t]"
    done
}

# --- one measurement of one target -----------------------------------------------------------
measure() { # round sub proto target [args...]
    local round=$1 sub=$2 proto=$3 target=$4
    shift 4
    local port
    if [[ $proto == tls ]]; then port=${PORT_tls[$target]}; else port=${PORT_tcp[$target]}; fi
    local args=(--target "127.0.0.1:$port" --label "$target" --round "$round" --out "$RESULTS")
    [[ $proto == tls ]] && args+=(--tls "$PKI/cert.pem")
    local p
    if [[ $target != direct ]]; then
        for p in ${RELAY_PIDS[$target]}; do args+=(--cpu-pid "$p"); done
    fi
    [[ $target == heptap-on || $target == heptap-tcp ]] &&
        args+=(--hep-stats "$HEP_STATS" --sink-pid "${PID[sink]}")
    log "round $round: $sub $* $proto $target"
    if ! taskset -c "$LOAD_CPUS" "$B" "$sub" "${args[@]}" "$@" >>"$WORK/measure.log" 2>&1; then
        log "  FAILED (see $WORK/measure.log): $(tail -n 1 "$WORK/measure.log")"
        KEEP=1
    fi
}

# --- run -------------------------------------------------------------------------------------
START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
"$B" gen-cert --dir "$PKI"
heptap_config heptap-on true udp
heptap_config heptap-tcp true tcp
heptap_config heptap-off false udp
# A spool that keeps a whole run (the relay's rate, not the spool's bound, is measured).
heptap_config heptap-spool true tcp "$HEP_DOWN_PORT" \
    "spool_dir = \"$WORK/spool\"
spool_max_bytes = \"8GiB\""
if ! "${NGINX[@]}" -t -q >>"$WORK/nginx.log" 2>&1; then
    log "nginx -t: $(tail -n 3 "$WORK/nginx.log")"
    KEEP=1
    exit 1
fi

taskset -c "$LOAD_CPUS" "$B" echo-server --cert "$PKI/cert.pem" --key "$PKI/key.pem" \
    --listen "127.0.0.1:${UPSTREAM[heptap-on]}" --listen "127.0.0.1:${UPSTREAM[heptap-off]}" \
    --listen "127.0.0.1:${UPSTREAM[heptap-tcp]}" --listen "127.0.0.1:${UPSTREAM[heptap-spool]}" \
    --listen "127.0.0.1:${UPSTREAM[haproxy]}" --listen "127.0.0.1:${UPSTREAM[nginx]}" \
    --listen "127.0.0.1:${UPSTREAM[direct]}" \
    --listen-tls "127.0.0.1:${PORT_tls[direct]}" >>"$WORK/echo.log" 2>&1 &
PID[echo]=$!
taskset -c "$LOAD_CPUS" "$B" hep-sink --listen "127.0.0.1:$HEP_PORT" --stats "$HEP_STATS" >>"$WORK/sink.log" 2>&1 &
PID[sink]=$!
wait_port "${UPSTREAM[direct]}"
wait_port "${PORT_tls[direct]}"

# Memory first, on fresh relay processes (for each transport), before load has grown the heaps.
for proto in $PROTOS; do
    wanted idle || continue
    start_relays
    for target in "${RELAYS[@]}"; do
        measure 1 idle "$proto" "$target" --count "$IDLE_CONNS"
    done
    stop_relays
done

start_relays
wanted rr_max && start_spool_relay
if [[ $SCRAPE != 0 ]]; then
    # One scrape of every heptap every SCRAPE seconds, each line of scrapes.log one answer.
    (
        taskset -pc "$LOAD_CPUS" "$BASHPID" >/dev/null
        while :; do
            for t in heptap-on heptap-tcp heptap-off heptap-spool; do
                curl -s -o /dev/null -w '%{http_code}\n' --max-time 2 \
                    "http://127.0.0.1:${METRICS_PORT[$t]}/metrics" || echo failed
            done
            sleep "$SCRAPE"
        done
    ) >>"$WORK/scrapes.log" 2>&1 &
    PID[scraper]=$!
fi
TARGETS=(heptap-on heptap-tcp heptap-off haproxy nginx direct)
for round in $(seq "$ROUNDS"); do
    # Rotate the order each round so no target always runs first (or right after another).
    shift_by=$(((round - 1) % ${#TARGETS[@]}))
    order=("${TARGETS[@]:shift_by}" "${TARGETS[@]:0:shift_by}")
    for proto in $PROTOS; do
        if wanted bulk; then
            for target in "${order[@]}"; do measure "$round" bulk "$proto" "$target" --duration "$DURATION"; done
        fi
        if wanted rr; then
            for target in "${order[@]}"; do measure "$round" rr "$proto" "$target" --duration "$DURATION"; done
        fi
        if wanted rr_max; then
            for target in "${order[@]}" "$SPOOL_RELAY"; do measure "$round" rr "$proto" "$target" --max --duration "$DURATION"; done
            if [[ $proto == "${PROTOS%% *}" ]]; then
                log "round $round: udp-floor"
                taskset -c "$LOAD_CPUS" "$B" udp-floor --sink "127.0.0.1:$HEP_PORT" --hep-stats "$HEP_STATS" --duration "$DURATION" \
                    --round "$round" --out "$RESULTS" >>"$WORK/measure.log" 2>&1 ||
                    { log "  FAILED (see $WORK/measure.log)"; KEEP=1; }
            fi
        fi
        if wanted connrate; then
            for target in "${order[@]}"; do measure "$round" connrate "$proto" "$target" --duration "$DURATION" --max-conns 15000; done
        fi
    done
done
END_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
SCRAPES=$(grep -c '^200$' "$WORK/scrapes.log" 2>/dev/null || echo 0)
SPOOL_DU=$(du -sh "$WORK/spool" 2>/dev/null | cut -f1 || echo 0)

# heptap-spool against heptap-tcp, rr --max: medians over the rounds, per transport.
spool_postscript() {
    python3 - "$RESULTS" "$SPOOL_DU" <<'PYEOF'
import json, statistics, sys
rates, cpu = {}, {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["test"] != "rr_max" or r["target"] not in ("heptap-tcp", "heptap-spool"):
        continue
    key = (r["proto"], r["target"])
    rates.setdefault(key, []).append(r["result"]["rate"])
    probe = r["result"].get("probe") or {}
    if probe.get("relay_cpu_s") and r["result"]["completed"]:
        cpu.setdefault(key, []).append(probe["relay_cpu_s"] / r["result"]["completed"] * 1e6)
if not rates:
    sys.exit(0)
print("### The disk spool: relay max rate with the collector down\n")
print("heptap-spool is heptap-tcp's config with its collector down for the whole run and the "
      "disk spool on: every HEP packet goes to segment files (written on the blocking thread "
      f"pool; {sys.argv[2]} on disk at the end). rr --max, medians over the rounds:\n")
print("| transport | heptap-tcp (collector up) msg/s | heptap-spool (collector down, spooling) msg/s | ratio | CPU us/msg up / spooling |")
print("|---|---|---|---|---|")
for proto in ("tcp", "tls"):
    up, down = rates.get((proto, "heptap-tcp")), rates.get((proto, "heptap-spool"))
    if not up or not down:
        continue
    u, d = statistics.median(up), statistics.median(down)
    cu = statistics.median(cpu.get((proto, "heptap-tcp"), [0]))
    cd = statistics.median(cpu.get((proto, "heptap-spool"), [0]))
    print(f"| {proto} | {u:,.0f} | {d:,.0f} | {d / u:.2f} | {cu:.1f} / {cd:.1f} |")
PYEOF
}
SPOOL_PS=$WORK/spool-postscript.md
spool_postscript >"$SPOOL_PS" || : >"$SPOOL_PS"
if [[ -n ${POSTSCRIPT:-} ]]; then
    { echo; cat "$POSTSCRIPT"; } >>"$SPOOL_PS"
fi
[[ -s $SPOOL_PS ]] && POSTSCRIPT=$SPOOL_PS

# --- report ----------------------------------------------------------------------------------
GIT_REV=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ $GIT_REV != unknown ]] && ! (cd "$ROOT" && git diff --quiet HEAD -- agent 2>/dev/null); then
    GIT_REV="$GIT_REV (agent/ with uncommitted changes)"
fi
GIT_REV=${REV_NOTE:-$GIT_REV}
if [[ $RELAY_THREADS == 1 ]]; then
    NGINX_NOTE="nginx \`worker_processes 1\` with \`master_process off\`, so the process measured is the one doing the work"
else
    NGINX_NOTE="nginx \`worker_processes $RELAY_THREADS\`, its master and workers measured together"
fi
RELAY_SIDE="$RELAY_THREADS thread(s) each (heptap \`[service] workers = $RELAY_THREADS\`, one runtime per worker; HAProxy \`nbthread $RELAY_THREADS\`; $NGINX_NOTE)"
LOAD_SIDE="the load tool (2 threads), the responder (1 thread), the HEP sink$([[ $SCRAPE != 0 ]] && echo " and the \`/metrics\` scraper" || true)"
if [[ -z $SHARED_CPUS ]]; then
    LAYOUT="**CPU layout: the relay and the load on separate cores.** Every relay was pinned with
taskset to core(s) $RELAY_CPUS with $RELAY_SIDE; they were all started but loaded one at a
time. Everything else, $LOAD_SIDE, was pinned to core(s) $LOAD_CPUS: nothing of the benchmark
but the relay under test worked on core(s) $RELAY_CPUS. The \"relay CPU use\" rows tell whether
the relay's cores or the load's were the limit."
else
    LAYOUT="**CPU layout: the relay and the load shared core(s) $SHARED_CPUS** ($(nproc) CPU(s) here,
none left to give the load cores of its own). Every relay was pinned with taskset to core(s)
$RELAY_CPUS with $RELAY_SIDE, and $LOAD_SIDE to core(s) $LOAD_CPUS, so the load took CPU from the
relay it measured."
fi
cat >"$WORK/preamble.md" <<EOF
## Relay: heptap vs HAProxy vs nginx vs direct (bench/run.sh)

Run on $(date -u '+%Y-%m-%d %H:%M UTC'), heptap $GIT_REV, $("$HEPTAP" --version 2>/dev/null | head -n 1),
$(haproxy -v 2>/dev/null | head -n 1 | sed 's/ - .*//'), $(nginx -v 2>&1 | sed 's/.*: //'), Linux $(uname -r),
$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')).
**The machine is shared with other jobs and noisy** (load average $START_LOAD at the start,
$END_LOAD at the end): absolute figures move from run to run, the ratios taken within the run
are what to compare. Every process of the benchmark ran at niceness $NICE to keep other jobs'
compilers (niceness 0 and 10) from stealing most of the CPU.

$LAYOUT

Relay CPU is the user + system time of the relay's own process(es) (/proc/PID/stat) over each
measurement, so rates and CPU per message, per connection and per MB compare at equal CPU. It
excludes the HEP sink's: the sink's CPU over each measurement of heptap-on and heptap-tcp is on
rows of its own (a collector on another host would pay it; but on loopback the kernel charges
the receive path of each UDP datagram to its sender, see the UDP floor below).

Memory per idle connection: $IDLE_CONNS connections held$([[ $IDLE_CONNS != "$IDLE_ASKED" ]] && echo " (not $IDLE_ASKED: the open-file hard limit here is $NOFILE, and a relay holds two sockets per connection)" || true), one
request/response on each first; VmRSS of the relay's process(es) with them open minus before,
divided by the count (kernel socket buffers are not in it; nginx allocates its connection table,
\`worker_connections $NGINX_CONNS\`, at start, so that part of its cost is not in the difference).

Command: \`$COMMAND\` (from the repository root; see the top of bench/run.sh for what each
measurement does). heptap-on traces connection events (\`[net.tcp]\`/\`[net.tls]\`) and every
SIP message (\`sip_trace_id\`) as HEP3 over UDP to a local sink that counts (it polls its socket
every millisecond instead of sleeping in \`recv\`, so heptap's sends do not pay for waking it, as
with a collector on another host); heptap-tcp is the same config sending HEP3 over one TCP
connection to the same sink (heptap batches frames into each write; on loopback each UDP
datagram also costs the sender the kernel's receive path up to the sink's socket, which a
collector on another host would pay itself); heptap-off is the
same config with every \`trace_on = false\`. HAProxy (\`mode tcp\`) and nginx (\`stream\`
\`proxy_pass\`) relay bytes with their packaged defaults and no logging. TLS is terminated by the
relay (TLS 1.3, AES-128-GCM, ECDSA P-256, no resumption), the upstream leg is plain TCP; direct
TLS is the responder's own rustls. Bulk sends non-SIP bytes, so heptap-on's SIP framer gives up on that
connection and only its connection events are traced there.
$([[ $SCRAPE != 0 ]] && echo "
Every heptap's \`GET /metrics\` (\`[mi] metrics_listen\`) was scraped every $SCRAPE s during the
measurements, as Prometheus would: $SCRAPES scrapes answered 200." || true)
EOF
POST_ARGS=()
[[ -n ${POSTSCRIPT:-} ]] && POST_ARGS=(--postscript "$POSTSCRIPT")
"$B" report --results "$RESULTS" --file "$BENCH_MD" --preamble "$WORK/preamble.md" "${POST_ARGS[@]}"
mkdir -p "$ROOT/bench/results"
cp "$RESULTS" "$ROOT/bench/results/last-run.jsonl"
cp "$WORK/preamble.md" "$ROOT/bench/results/last-run-preamble.md"
if grep -q '"errors":[1-9]' "$RESULTS"; then
    log "some measurements had errors: see bench/results/last-run.jsonl"
fi
log "done: $BENCH_MD updated; raw results in bench/results/last-run.jsonl"
