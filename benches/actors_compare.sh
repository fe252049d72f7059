#!/usr/bin/env bash
# Message passing against its peers, interleaved: each round runs the vm's program and then each
# peer once, so load from elsewhere on a shared machine falls on both sides of a ratio alike
# (hyperfine runs all of one command's runs first). Prints every reading (wall seconds) and, per
# benchmark, the median of each side and the median of the per-round ratios.
# Usage (from the repository root): benches/actors_compare.sh [ROUNDS]   (default 9)
# Needs: golang-go and erlang-nox (apt-get install -y golang-go erlang-nox) and the tokio floor
# (built here on first use). Wall time includes process start (erl's is ~1 s): for selective
# receive compare the times the programs print (`ms=`, `us=`), as docs/BENCHMARKS.md does.
set -eu
rounds=${1:-9}
. "$(dirname "$0")/peers.sh"
floor=$tokio_bin/floor
(cd "$peers/go" && go build -o /tmp/peer-gobench bench.go)

secs() { # secs CMD...: wall-clock seconds of one run (output discarded)
  local t0 t1
  t0=$(date +%s%N)
  "$@" >/dev/null
  t1=$(date +%s%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f\n", (b - a) / 1e9 }'
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# name | vm flags, program and N | peer command (the last rows compare the VM with itself:
# channels against mailboxes, issue 18's goals of 1.25x and 1.5x; fanin.vasm is chan_fanin through a
# mailbox, fanin_sync.vasm the same with each send waiting for the receiver, as a rendezvous does)
p=benches/programs
benches=(
  "ring|$p/ring.vasm 10000000|$floor ring 10000000"
  "pingpong|$p/pingpong.vasm 1000000|$floor pingpong 1000000"
  "chan_pingpong|$p/chan_pingpong.vasm 1000000|/tmp/peer-gobench pingpong 1000000"
  "chan_pingpong/pingpong|$p/chan_pingpong.vasm 1000000|$vm run $p/pingpong.vasm 1000000"
  "chan_pingpong/pingpong --workers 1|--workers 1 $p/chan_pingpong.vasm 1000000|$vm run --workers 1 $p/pingpong.vasm 1000000"
  "chan_fanin/fanin|$p/chan_fanin.vasm 1000000|$vm run $p/fanin.vasm 1000000"
  "chan_fanin/fanin --workers 1|--workers 1 $p/chan_fanin.vasm 1000000|$vm run --workers 1 $p/fanin.vasm 1000000"
  "chan_fanin/fanin_sync|$p/chan_fanin.vasm 1000000|$vm run $p/fanin_sync.vasm 1000000"
  "selective 20000 (BEAM)|$p/selective.vasm 20000|erl -noshell -pa /tmp/peer-erl -s selective main 20000 -s init stop"
)
mkdir -p /tmp/peer-erl && erlc -o /tmp/peer-erl benches/selective.erl
for b in "${benches[@]}"; do
  IFS='|' read -r name prog peer <<<"$b"
  vms=() peerts=() ratios=()
  read -r -a progv <<<"$prog"
  read -r -a peerv <<<"$peer"
  for r in $(seq "$rounds"); do
    v=$(secs "$vm" run "${progv[@]}")
    p=$(secs "${peerv[@]}")
    echo "$name round $r: vm $v s, peer $p s"
    vms+=("$v") peerts+=("$p")
    ratios+=("$(awk -v a="$v" -v b="$p" 'BEGIN { printf "%.3f\n", a / b }')")
  done
  mv=$(printf '%s\n' "${vms[@]}" | median)
  mp=$(printf '%s\n' "${peerts[@]}" | median)
  mr=$(printf '%s\n' "${ratios[@]}" | median)
  echo "== $name: vm median $mv s, peer ($peer) median $mp s, ratio of medians $(awk -v a="$mv" -v b="$mp" 'BEGIN { printf "%.3f", a / b }'), median of per-round ratios $mr"
done
