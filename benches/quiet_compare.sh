#!/usr/bin/env bash
# mcast-dump --quiet (the tools package) against a plain libc recvmmsg loop
# (examples/libc_dump.rs) doing the same per-packet work, side by side,
# alternating rounds. Catch-up throughput: the receiver joins, stalls while
# mcast-send queues N packets on lo, then drains;
# pps = packets / (last read - first read), both sides timed at the same
# instants: from when the first packet reaches the per-packet code (right
# after the receive call that read it) to when the last receive call that
# read packets is done with them. Rounds alternate which side runs first.
# A second ratio divides the packets by each receiver's CPU time instead
# (its process from before the send to its exit, stall and idle wait
# asleep), which time taken by other processes on the CPU does not move.
# Needs root for a receive buffer that holds N packets (SO_RCVBUFFORCE).
#
#   bash benches/quiet_compare.sh            (N=150000 ROUNDS=5 by default)
#   ROUNDS=9 taskset -c 1 bash benches/quiet_compare.sh   (as measured for the README)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-150000}
ROUNDS=${ROUNDS:-5}
GROUP=239.255.66.1
cargo build --release --quiet -p ipv4-reactor-tools --bin mcast-dump --bin mcast-send
cargo build --release --quiet -p ipv4-reactor --example libc_dump
bin=${CARGO_TARGET_DIR:-target}/release
results=$(mktemp)
trap 'rm -f "$results" "$results".out "$results".err' EXIT

run_side() { # side
    local side=$1 port=$((40000 + RANDOM % 20000)) out
    local common=(--stall-ms 2500 --rcvbuf 268435456 --idle-exit-ms 500)
    if [ "$side" = dump ]; then
        "$bin/mcast-dump" "$GROUP:$port" --iface lo --quiet --json "${common[@]}" >"$results.out" 2>"$results.err" &
    else
        "$bin/examples/libc_dump" "$GROUP:$port" "${common[@]}" >"$results.out" 2>"$results.err" &
    fi
    local pid=$!
    for _ in $(seq 100); do grep -q '^listening' "$results.err" 2>/dev/null && break; sleep 0.05; done
    sleep 0.3
    # The receiver's own CPU time (its main thread, which does all the
    # receiving: /proc/PID/schedstat, ns on a CPU) from before the send to
    # its last sample before it exits, half a second after the drain: time
    # other processes took from it on a shared machine does not count.
    local cpu0 cpu1 v
    read -r cpu0 _ </proc/$pid/schedstat
    "$bin/mcast-send" "$GROUP:$port" --iface lo --count "$N" --size 64 --batch 64 >/dev/null
    cpu1=$cpu0
    while kill -0 "$pid" 2>/dev/null; do
        if read -r v _ </proc/$pid/schedstat 2>/dev/null; then cpu1=$v; fi
        sleep 0.1
    done
    wait "$pid"
    out=$(grep summary "$results.out")
    echo "$side $((cpu1 - cpu0)) $out" >>"$results"
}

# Each round starts with the other side: whatever the first run of a round
# pays (or gains) falls on both sides alike.
for r in $(seq "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then
        run_side dump
        run_side libc
    else
        run_side libc
        run_side dump
    fi
done

python3 - "$results" "$N" <<'PY'
import json, sys, statistics
rows = {"dump": [], "libc": []}
for line in open(sys.argv[1]):
    side, cpu_ns, js = line.split(" ", 2)
    s = json.loads(js)["summary"]
    s["cpu_pps"] = s["packets"] / (int(cpu_ns) / 1e9) if int(cpu_ns) > 0 else 0.0
    rows[side].append(s)
n = int(sys.argv[2])
med = {k: statistics.median(r["pps"] for r in v) for k, v in rows.items()}
cpu = {k: statistics.median(r["cpu_pps"] for r in v) for k, v in rows.items()}
for k, v in rows.items():
    got = [r["packets"] for r in v]
    print(f"{k:5} median {med[k]:>10.0f} pps  rounds {[round(r['pps']) for r in v]}  packets {got} of {n}")
    print(f"{k:5} by CPU time {cpu[k]:>10.0f} pps  rounds {[round(r['cpu_pps']) for r in v]}")
print(f"ratio mcast-dump --quiet / libc loop: {med['dump'] / med['libc']:.3f}")
print(f"ratio by the receivers' CPU time: {cpu['dump'] / cpu['libc']:.3f}")
PY
