#!/usr/bin/env bash
# `make bench`: per-operation crypto costs, the PQ handshake, then the tunnel comparison
# (raw veth, wireguard-go, nebula, ShadowMesh in two network namespaces), and a summary with the
# targets of issue 3; then the DHT simulation (bench/dht_sim.py, 1,000 nodes over loopback). Needs
# root. Results: bench/results/ (gitignored). Knobs: see BENCHMARKS.md.
#   bash bench/run.sh                 # everything, ~17 min (DHT_NODES=0: ~10 min, without the DHT)
#   RUNS=1 DUR=5 UDP_DUR=5 bash bench/run.sh    # quick look
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export RESULTS=${RESULTS:-bench/results}
trap 'echo "bench: interrupted" >&2; exit 130' INT TERM

if [ "$(id -u)" != 0 ]; then
    echo "bench: needs root (network namespaces, TUN devices); run it as root" >&2
    exit 2
fi
missing=""
for tool in ip iperf3 ping wireguard-go wg nebula nebula-cert; do
    command -v "$tool" >/dev/null || missing="$missing $tool"
done
if [ -n "$missing" ]; then
    echo "bench: missing:$missing -- apt-get install iperf3 iputils-ping iproute2 wireguard-go wireguard-tools nebula" >&2
    echo "bench: the legs that need them are skipped" >&2
fi

failed=0
step() {
    echo "== $*" >&2
    "$@" || { rc=$?; [ $rc = 130 ] && exit 130; echo "bench: step failed ($rc): $*" >&2; failed=1; }
}
echo "== $(date -u '+%F %T') UTC, load average: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
step "$PY" bench/crypto.py --results "$RESULTS"
step "$PY" bench/handshake.py --results "$RESULTS"
step "$PY" bench/netbench.py
if [ "${DHT_NODES:-1000}" != 0 ]; then  # the DHT simulation (~7 min at 1,000 nodes); DHT_NODES=0 skips it
    mkdir -p "$RESULTS"
    step "$PY" bench/dht_sim.py --nodes "${DHT_NODES:-1000}" --lookups "${DHT_LOOKUPS:-1000}" \
        --json "$RESULTS/dht-$(date -u +%Y%m%d-%H%M%S).json"
fi
echo
echo "== summary (bench/report.py $RESULTS)"
"$PY" bench/report.py "$RESULTS"
exit $failed
