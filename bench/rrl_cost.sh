#!/usr/bin/env bash
# bench/rrl_cost.sh: what response-rate limiting costs per UDP query, in instructions counted
# by callgrind inside the UDP worker (its own code and everything it calls, system calls
# excluded), for the same query sequence three ways:
#   off      rrl_responses_per_sec = 0
#   pass     the limit on, every reply within it (rate 1,000,000/s)
#   limited  the limit at 10/s with rrl_slip = 1: nearly every reply is slipped (sent empty
#            with TC), so that a client waiting for each reply still gets one
# 127.0.0.1 is made a stranger (rrl_exempt is set to a network no client is in), so the
# limit is really consulted. dnsperf sends one query at a time, so none is lost.
#
# usage: bench/rrl_cost.sh [--bin PATH] [-n QUERIES] [--port P]   (after cargo build --release)
# Prints one line per mode: `<mode>: <Ir> instructions in the UDP worker, <Ir/query> per query`,
# then the differences against `off`. Exit 2 when valgrind or dnsperf is missing.
set -euo pipefail

bin=target/release/consul-dns queries=5000 port=26853
die() { echo "bench/rrl_cost.sh: $*" >&2; exit 2; }
while (($#)); do
  case $1 in
    --bin) bin=$2; shift 2 ;;
    -n) queries=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -e/{/^set -e/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) die "unknown option $1" ;;
  esac
done
for tool in valgrind callgrind_annotate dnsperf; do
  command -v "$tool" >/dev/null || die "$tool is needed (apt-get install valgrind dnsperf)"
done
[[ -x $bin ]] || die "$bin is missing: cargo build --release first"

ss -Hlun "sport = :$port" | grep -q . && die "UDP port $port is busy: choose another with --port"
work=$(mktemp -d)
pid=""
trap '[[ -n $pid ]] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
cat >"$work/services.toml" <<'EOF'
[[nodes]]
name = "n1"
address = "127.0.0.21"
[[nodes]]
name = "n2"
address = "127.0.0.22"
[[services]]
name = "web"
node = "n1"
port = 8080
[[services]]
name = "web"
id = "web-2"
node = "n2"
port = 8080
EOF
printf 'web.service.consul SRV\nweb.service.consul A\n' >"$work/queries"

declare -A per_query
run() { # mode rate slip
  local mode=$1 rate=$2 slip=$3 out="$work/callgrind.$1"
  valgrind --tool=callgrind --callgrind-out-file="$out" --collect-atstart=no \
    --toggle-collect='*udp_worker*' \
    "$bin" --static "$work/services.toml" --listen "127.0.0.1:$port" --http off --recursor none \
    --udp-workers 1 --log-level info --rrl-responses-per-sec "$rate" --rrl-slip "$slip" --rrl-exempt 192.0.2.0/24 \
    2>"$work/valgrind.$mode" &
  pid=$!
  local ready=""
  for _ in $(seq 1 3000); do # wait for the listening line, so no probe query is counted
    if grep -q "DNS listening." "$work/valgrind.$mode"; then
      ready=1
      break
    fi
    sleep 0.1
  done
  [[ -n $ready ]] || { tail -5 "$work/valgrind.$mode" >&2; die "consul-dns under valgrind did not start"; }
  dnsperf -s 127.0.0.1 -p "$port" -d "$work/queries" -n $((queries / 2)) -c 1 -q 1 -t 5 >"$work/dnsperf.$mode"
  kill -TERM "$pid"
  wait "$pid" || true
  pid=""
  local ir
  ir=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ && !done {gsub(",", "", $1); print $1; done = 1}')
  per_query[$mode]=$((ir / queries))
  echo "$mode: $ir instructions in the UDP worker, ${per_query[$mode]} per query"
}

run off 0 2
run pass 1000000 2
run limited 10 1
echo "rrl cost per query, within the limit: $((per_query[pass] - per_query[off])) instructions"
echo "rrl cost per query, over the limit (reply slipped): $((per_query[limited] - per_query[off])) instructions"
