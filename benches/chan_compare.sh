#!/usr/bin/env bash
# Rendezvous channels against mailboxes in wall time (issue 18 point 6), interleaved round by
# round so that load from elsewhere falls on both sides of a ratio alike. Each round runs, for
# each binary given: chan_pingpong then pingpong at --workers 1 and at the default, and
# chan_fanin, fanin and fanin_sync at the default and at --workers 1 (1,000,000 round trips or
# values each). Prints, per binary and pair, the median of the per-round ratios, the ratio of
# the minimums and the median times.
# Usage (from the repository root): benches/chan_compare.sh ROUNDS VM...   (release builds)
# With PAIRS=pingpong in the environment, only the ping-pong pairs run (a round takes a fifth of
# the time).
# Needs: python3.
set -eu
rounds=$1
shift
p=benches/programs
ms() { # ms CMD...: wall-clock milliseconds of one run, to 0.1 ms
  local t0 t1
  t0=$(date +%s%N)
  "$@" >/dev/null
  t1=$(date +%s%N)
  echo $(((t1 - t0) / 100000))
}
out=$(mktemp)
for _ in $(seq "$rounds"); do
  for vm in "$@"; do
    k=$(basename "$vm")
    for w in 1 0; do
      flags=()
      [ "$w" = 1 ] && flags=(--workers 1)
      echo "$k pingpong-w$w $(ms "$vm" run "${flags[@]}" $p/chan_pingpong.vasm 1000000) $(ms "$vm" run "${flags[@]}" $p/pingpong.vasm 1000000)" >>"$out"
      [ "${PAIRS:-all}" = pingpong ] && continue
      echo "$k fanin-w$w $(ms "$vm" run "${flags[@]}" $p/chan_fanin.vasm 1000000) $(ms "$vm" run "${flags[@]}" $p/fanin.vasm 1000000) $(ms "$vm" run "${flags[@]}" $p/fanin_sync.vasm 1000000)" >>"$out"
    done
  done
done
python3 - "$out" <<'PY'
import collections, statistics as st, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    k, pair, *t = line.split()
    rows[(k, pair)].append([int(x) / 10 for x in t])
for (k, pair), rs in sorted(rows.items()):
    workers = "--workers 1" if pair.endswith("w1") else "default workers"
    chan = [r[0] for r in rs]
    for i, name in enumerate(["pingpong"] if pair.startswith("pingpong") else ["fanin", "fanin_sync"], 1):
        other = [r[i] for r in rs]
        print(f"{k} chan_{pair.split('-')[0]} / {name}, {workers}: median of ratios "
              f"{st.median([a / b for a, b in zip(chan, other)]):.3f}, ratio of minimums "
              f"{min(chan) / min(other):.3f}; medians {st.median(chan):.1f} / {st.median(other):.1f} ms (n={len(rs)})")
PY
rm -f "$out"
