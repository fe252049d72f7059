#!/bin/bash
# kv_callgrind.sh VM TAG [RUNS]: instructions per kv request, as docs/BENCHMARKS.md measures them.
# The baseline's kv.vasm (7e61a22:examples/kv.vasm, which every binary since runs) is served by
# VM under callgrind with --workers 1: once idle (started, pinged, stopped) and RUNS times while
# `redis-benchmark -n 20000 -P 16 -t set,get` runs; each run's per request is
# (total - idle) / 40000. Outputs: /tmp/kvcg-TAG-{idle,1..RUNS}.cg (for callgrind_annotate).
# Needs valgrind, redis-cli, redis-benchmark and python3; run from the repository.
set -e
VM=$1; TAG=$2; RUNS=${3:-1}
[ -n "$VM" ] && [ -n "$TAG" ] || { echo "usage: $0 VM TAG [RUNS]" >&2; exit 2; }
KV=/tmp/kvcg-kv-7e61a22.vasm
[ -f $KV ] || git show 7e61a22:examples/kv.vasm > $KV
one() { # OUT N: one server; prints its total
  local OUT=$1 N=$2 PORT VP
  PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  nice -n 19 valgrind --tool=callgrind --dump-instr=no --callgrind-out-file=$OUT \
    $VM run --workers 1 --allow-net $KV $PORT > /dev/null 2>&1 &
  VP=$!
  until redis-cli -p $PORT ping > /dev/null 2>&1; do sleep 0.2; done
  if [ "$N" != 0 ]; then redis-benchmark -p $PORT -n $N -P 16 -t set,get -q > /dev/null; fi
  kill -INT $VP
  for _ in $(seq 50); do kill -0 $VP 2> /dev/null || break; sleep 0.2; done
  kill $VP 2> /dev/null || true; wait $VP 2> /dev/null || true
  grep -m1 '^summary\|^totals' $OUT | awk '{print $2}'
}
IDLE=$(one /tmp/kvcg-$TAG-idle.cg 0)
echo "idle total $IDLE"
for r in $(seq $RUNS); do
  T=$(one /tmp/kvcg-$TAG-$r.cg 20000)
  echo "run $r total $T per request $(python3 -c "print(round(($T - $IDLE) / 40000, 1))")"
done
