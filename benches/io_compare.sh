#!/usr/bin/env bash
# Side-by-side throughput of the example services against their peers, the same load client on
# the same machine, RUNS rounds each, printing every reading and the median ratio.
# Usage (from the repository root): benches/io_compare.sh [RUNS]   (default 3)
# Needs: wrk, redis-tools, redis-server, golang-go (apt-get install -y wrk redis-tools
# redis-server golang-go) and the tokio peers (built here on first use).
set -eu
runs=${1:-3}
. "$(dirname "$0")/peers.sh"
build_go() { # build_go DIR OUT: a Go main package without a module file
  local tmp; tmp=$(mktemp -d)
  cp "$peers/go/$1/main.go" "$tmp/" && (cd "$tmp" && go mod init peer >/dev/null 2>&1 && go build -o "$2" .)
  rm -rf "$tmp"
}
build_go echo /tmp/peer-goecho
build_go http /tmp/peer-gohttp

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
start() { # start PORT CMD...: runs a server in the background and waits for its port
  local port=$1; shift
  "$@" >/dev/null 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && return 0; sleep 0.05; done
  echo "server on port $port did not start: $*" >&2; exit 1
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

start 7401 "$vm" run --allow-net examples/echo.vasm 7401
start 7402 "$tokio_bin/echo_native" 7402
start 7403 /tmp/peer-goecho 7403
start 7411 "$vm" run --allow-net examples/http.vasm 7411
start 7412 /tmp/peer-gohttp 7412
start 7421 "$vm" run --allow-net examples/kv.vasm 7421
start 7422 redis-server --port 7422 --save "" --appendonly no

echo_rt() { "$tokio_bin/echo_load" "127.0.0.1:$1" 100 2000 | sed -n 's/.*rt_per_s=\([0-9.]*\).*/\1/p'; }
http_rps() { wrk -t2 -c100 -d5s "http://127.0.0.1:$1/" | awk '/Requests\/sec/ {print $2}'; }
kv_rps() { # kv_rps PORT TEST [PIPELINE]
  redis-benchmark -p "$1" -t "$2" -n 100000 -c 50 -P "${3:-1}" -q 2>/dev/null | tr '\r' '\n' \
    | awk '/requests per second/ {print $2}' | tail -1
}

declare -A got
measure() { # measure NAME CMD...: appends one reading
  local v; v=$("${@:2}")
  echo "$1 $v"
  got[$1]="${got[$1]:-} $v"
}
for r in $(seq "$runs"); do
  echo "# round $r"
  measure echo_vm echo_rt 7401; measure echo_native echo_rt 7402; measure echo_go echo_rt 7403
  measure http_vm http_rps 7411; measure http_go http_rps 7412
  for t in set get; do
    for p in 1 16; do
      measure "kv_${t}_P${p}_vm" kv_rps 7421 $t $p
      measure "kv_${t}_P${p}_redis" kv_rps 7422 $t $p
    done
  done
done
med() { echo "${got[$1]}" | tr ' ' '\n' | grep . | median; }
ratio() { awk -v a="$(med "$1")" -v b="$(med "$2")" 'BEGIN {printf "%.2f", a / b}'; }
echo "# medians of $runs rounds"
echo "echo   vm $(med echo_vm) rt/s  echo_native $(med echo_native)  go $(med echo_go)  vm/native $(ratio echo_vm echo_native)  go/native $(ratio echo_go echo_native)"
echo "http   vm $(med http_vm) req/s  go $(med http_go)  vm/go $(ratio http_vm http_go)"
for t in set get; do
  for p in 1 16; do
    echo "kv $t -P $p  vm $(med "kv_${t}_P${p}_vm") req/s  redis $(med "kv_${t}_P${p}_redis")  vm/redis $(ratio "kv_${t}_P${p}_vm" "kv_${t}_P${p}_redis")"
  done
done
for i in 1 2 3; do "$vm" run benches/programs/blocking.vasm 64 2000; done
