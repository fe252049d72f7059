#!/usr/bin/env bash
# Instruction counts per unit of work for the message-passing benchmarks (callgrind, one
# worker): ring per hop, pingpong and chan_pingpong per round trip, fib 25 in total, and
# fanin, fanin_sync and chan_fanin per value. Each per-unit figure is the difference of two
# runs' totals over the difference of their units, so process start-up cancels out.
# Usage (from the repository root): benches/msg_callgrind.sh VM   (a release build of `vm`)
# Needs: valgrind.
set -eu
vm=$1
p=benches/programs
ir() { # ir PROG N: the program's total instruction count
  local out
  out=$(mktemp)
  valgrind --tool=callgrind --dump-instr=no --callgrind-out-file="$out" "$vm" run --workers 1 "$p/$1.vasm" "$2" 2>&1 |
    grep -o "Collected : [0-9]*" | awk '{print $3}'
  rm -f "$out"
}
per() { # per PROG N1 N2 UNITS
  local a b
  a=$(ir "$1" "$2")
  b=$(ir "$1" "$3")
  awk -v a="$a" -v b="$b" -v u="$4" -v n="$1" 'BEGIN { printf "%s %.1f\n", n, (b - a) / u }'
}
per ring 100000 300000 200000
per pingpong 20000 120000 100000
per chan_pingpong 20000 120000 100000
echo "fib25 $(ir fib 25)"
per fanin 12800 76800 64000
per fanin_sync 12800 76800 64000
per chan_fanin 12800 76800 64000
