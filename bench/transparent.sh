#!/usr/bin/env bash
# bench/transparent.sh: the connection rate of a transparent listener (upstream_source =
# "client") against the same listener opening its upstream connections from heptap's own
# address (upstream_source = "local"), in two network namespaces this script makes (root):
#
#   client ns  192.0.2.10  heptap-bench connrate      --veth-->   heptap ns  192.0.2.1  heptap
#                                                                 lo 198.51.100.1:5060 echo-server
#
# (TCP between the root namespace and a namespace is filtered on these machines, so both ends
# are in namespaces.) The heptap namespace gets the same-host routing of docs/transparent.md.
# Each round measures both listeners back to back (order alternating): connect, one SIP
# request/response, close, 16 clients, DURATION s or MAX_CONNS (5,000) connections. Prints each figure, the
# medians and the ratio client/local. The namespaces are deleted on exit, failures included.
#
#   bench/transparent.sh                      # build (release), 3 rounds of 3 s
#   ROUNDS=5 DURATION=5 SKIP_BUILD=1 bench/transparent.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-3}
ROUNDS=${ROUNDS:-3}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release
CLIENT=htbc$$
HOST=htbh$$
WORK=$(mktemp -d)

cleanup() {
    [ -n "${HEPTAP_PID:-}" ] && kill "$HEPTAP_PID" 2>/dev/null || true
    [ -n "${ECHO_PID:-}" ] && kill "$ECHO_PID" 2>/dev/null || true
    ip netns del "$CLIENT" 2>/dev/null || true
    ip netns del "$HOST" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    cargo build --release --manifest-path "$ROOT/Cargo.toml" -p heptap --bin heptap
    cargo build --release --manifest-path "$ROOT/Cargo.toml" -p heptap-bench --bin heptap-bench
fi

ip netns add "$CLIENT"
ip netns add "$HOST"
ip -n "$CLIENT" link set lo up
ip -n "$HOST" link set lo up
ip -n "$CLIENT" link add v0 type veth peer name v1 netns "$HOST"
ip -n "$CLIENT" addr add 192.0.2.10/24 dev v0
ip -n "$HOST" addr add 192.0.2.1/24 dev v1
ip -n "$CLIENT" link set v0 up
ip -n "$HOST" link set v1 up
ip -n "$CLIENT" route add default via 192.0.2.1
ip -n "$HOST" addr add 198.51.100.1/32 dev lo
ip -n "$HOST" rule add ipproto tcp sport 5060 lookup 100
ip -n "$HOST" route add local 0.0.0.0/0 dev lo table 100
# Churning connections: TIME_WAIT sockets may be reused, and the ports last longer, on both the
# client side and heptap's upstream side (each namespace has its own settings).
for ns in "$CLIENT" "$HOST"; do
    ip netns exec "$ns" sysctl -qw net.ipv4.tcp_tw_reuse=1
    ip netns exec "$ns" sysctl -qw net.ipv4.ip_local_port_range="1024 65000"
done

cat >"$WORK/heptap.toml" <<EOF
[service]
workers = 1
[[listener]]
name = "local"
proto = "tcp"
listen = "192.0.2.1:5062"
upstream = "198.51.100.1:5060"
max_connections = 20000
[[listener]]
name = "client"
proto = "tcp"
listen = "192.0.2.1:5063"
upstream = "198.51.100.1:5060"
upstream_source = "client"
max_connections = 20000
[net.tcp]
trace_on = false
[mi]
fifo_name = "$WORK/heptap_fifo"
reply_dir = "$WORK/"
http_listen = ""
EOF

ip netns exec "$HOST" "$BIN/heptap-bench" echo-server --listen 198.51.100.1:5060 &
ECHO_PID=$!
ip netns exec "$HOST" "$BIN/heptap" check-config -c "$WORK/heptap.toml"
ip netns exec "$HOST" "$BIN/heptap" serve -c "$WORK/heptap.toml" 2>"$WORK/heptap.log" &
HEPTAP_PID=$!
for _ in $(seq 100); do
    grep -q "heptap is ready" "$WORK/heptap.log" && break
    sleep 0.1
done
grep -q "heptap is ready" "$WORK/heptap.log" || { cat "$WORK/heptap.log"; exit 1; }

measure() { # label port round
    ip netns exec "$CLIENT" "$BIN/heptap-bench" connrate --target "192.0.2.1:$2" \
        --label "$1" --round "$3" --cpu-pid "$HEPTAP_PID" --duration "$DURATION" \
        --max-conns "${MAX_CONNS:-5000}" --out "$WORK/results.jsonl" >/dev/null
}
for round in $(seq "$ROUNDS"); do
    if [ $((round % 2)) = 1 ]; then
        measure local 5062 "$round"
        measure client 5063 "$round"
    else
        measure client 5063 "$round"
        measure local 5062 "$round"
    fi
done

python3 - "$WORK/results.jsonl" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by, cpu, errors = {}, {}, {}
for r in rows:
    res = r["result"]
    by.setdefault(r["target"], []).append(res["rate"])
    errors[r["target"]] = errors.get(r["target"], 0) + res["errors"]
    if res["probe"].get("relay_cpu_s") is not None and res["completed"]:
        cpu.setdefault(r["target"], []).append(res["probe"]["relay_cpu_s"] * 1e6 / res["completed"])
for label, rates in by.items():
    c = statistics.median(cpu[label]) if label in cpu else float("nan")
    print(f"{label:6} conn/s per round: {', '.join(f'{x:,.0f}' for x in rates)}; "
          f"median {statistics.median(rates):,.0f}; relay CPU {c:.0f} us/conn; errors {errors[label]}")
ratio = statistics.median(by["client"]) / statistics.median(by["local"])
print(f"ratio client/local (medians): {ratio:.2f}")
# Each round measured both back to back: its ratio shares that round's noise.
pairs = [c / l for c, l in zip(by["client"], by["local"]) if l]
print(f"ratio client/local per round: {', '.join(f'{x:.2f}' for x in pairs)}; median {statistics.median(pairs):.2f}")
if "client" in cpu and "local" in cpu:
    print(f"relay CPU per connection client/local (medians): {statistics.median(cpu['client']) / statistics.median(cpu['local']):.2f}")
EOF
