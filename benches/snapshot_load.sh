#!/usr/bin/env bash
# The echo service under load (100 connections, the tokio peers' echo_load client) with and
# without a snapshot every second, RUNS interleaved rounds, printing every reading and the
# median ratio (goal: snapshots every second cost at most 5 % of the throughput).
# Usage (from the repository root): benches/snapshot_load.sh [RUNS] [ROUNDS_PER_CONN]
#   (defaults 5 and 20000: about 3 s of load per reading, so each loaded reading spans
#   several snapshots).
set -eu
runs=${1:-5}
rounds=${2:-20000}
. "$(dirname "$0")/peers.sh"
snap=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$snap"; }
trap cleanup EXIT
start() { # start PORT CMD...: runs a server in the background and waits for its port
  local port=$1; shift
  "$@" >/dev/null 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && return 0; sleep 0.05; done
  echo "server on port $port did not start: $*" >&2; exit 1
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
start 7431 "$vm" run --allow-net examples/echo.vasm 7431
start 7432 "$vm" run --allow-net --snapshot "$snap/echo.snap" --snapshot-every 1s examples/echo.vasm 7432
echo_rt() { "$tokio_bin/echo_load" "127.0.0.1:$1" 100 "$rounds" | sed -n 's/.*rt_per_s=\([0-9.]*\).*/\1/p'; }
plain=(); snapped=()
for r in $(seq "$runs"); do
  a=$(echo_rt 7431); b=$(echo_rt 7432)
  echo "round $r: plain $a rt/s, snapshot every 1s $b rt/s"
  plain+=("$a"); snapped+=("$b")
done
pm=$(printf '%s\n' "${plain[@]}" | median); sm=$(printf '%s\n' "${snapped[@]}" | median)
echo "median: plain $pm, snapshotting $sm, ratio $(awk -v a="$sm" -v b="$pm" 'BEGIN {printf "%.3f", a / b}')"
ls -l "$snap"
