#!/usr/bin/env bash
# bench/tcp.sh: every TCP figure of the README, consul-dns and Knot DNS in the same run, each
# server pinned to CPU 0 and capped by a cpu cgroup, the load on CPU 1 (bench/README.md says why).
#
# usage: bench/tcp.sh [options] [qps] [abuse] [callgrind]   (from the repository root, as root, after
#        cargo build --release --bin consul-dns --example tcp_load)
#   qps     queries per second over TCP, rounds alternating consul-dns, knot:
#             pipelined: dnsperf -m tcp with -c connections (16), 100 queries outstanding
#             fresh:     examples/tcp_load fresh, one new connection per query (as Kong's client)
#   abuse   how fresh queries fare while one client abuses TCP (each server once):
#             idle:  10,000 idle connections, then 5 fresh queries from another address
#             drip:  1,100 connections each sending one query every 5 s, 40 s, a fresh query a second
#             hog:   one connection pipelining large queries without pause, never reading: whether the
#                    server still holds it 30 s on
#   callgrind  instructions per TCP query of consul-dns under valgrind --tool=callgrind (not
#             capped, no Knot): the count with load minus the count of a run with no load,
#             divided by the queries answered; pipelined (5,000 queries) and fresh (5 s)
#   (qps and abuse when none is named)
# options:
#   -l SEC       length of one measured run (10)       --rounds R   rounds for qps (3)
#   -c N         dnsperf connections (16)              -f N         concurrent fresh clients (16)
#   --quota PCT  CPU share of one core for the server (50; 0 = no cap)
#   --port P     consul-dns on P, Knot on P+1 (25363)  --bin PATH   consul-dns (target/release/consul-dns)
#   --tool PATH  the load tool (target/release/examples/tcp_load)
#   --data DIR   catalog dir of bench/run.sh (/tmp/consul-dns-bench/1000x3; made by it when missing)
#   --no-knot    abuse: consul-dns only
#   CONSUL_DNS_ARGS: extra flags for consul-dns (e.g. "--tcp-max-per-client 64")
# Last lines: `ratio consul-dns/knot tcp-pipelined qps: R` and `ratio consul-dns/knot tcp-fresh qps: R`
# (medians). Exit 0, or 2 when a tool is missing, a port is busy or a server does not answer.
set -euo pipefail

seconds=10 rounds=3 clients=16 fresh_clients=16 quota=50 port=25363 knot=1
bin=target/release/consul-dns tool=target/release/examples/tcp_load data=/tmp/consul-dns-bench/1000x3
parts=()
die() { echo "bench/tcp.sh: $*" >&2; exit 2; }
while (($#)); do
  case $1 in
    -l) seconds=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    -c) clients=$2; shift 2 ;;
    -f) fresh_clients=$2; shift 2 ;;
    --quota) quota=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --tool) tool=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --no-knot) knot=0; shift ;;
    qps|abuse|callgrind) parts+=("$1"); shift ;;
    -h|--help) sed -n '2,/^set -e/{/^set -e/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
((${#parts[@]})) || parts=(qps abuse)
for t in dnsperf knotd dig taskset awk ss; do
  command -v "$t" >/dev/null || die "$t is missing: apt-get install -y dnsperf knot dnsutils util-linux gawk iproute2."
done
[[ -x $bin ]] || die "$bin is not there: cargo build --release --bin consul-dns (or pass --bin)."
[[ -x $tool ]] || die "$tool is not there: cargo build --release --example tcp_load (or pass --tool)."
if [[ ! -f $data/mixed.queries ]]; then
  # bench/run.sh owns the generator; one short round of it writes the catalog, zone and queries.
  "$(dirname "$0")/run.sh" --data "$data" -l 1 --rounds 1 --quota 0 >/dev/null
fi
ulimit -n "$(ulimit -Hn)"
server_cpu=0 client_cpu=$(($(nproc) > 1 ? 1 : 0))

# ---- servers ----------------------------------------------------------------------------------
pid="" cgroup=""
cap() { # cap PID: at most $quota% of one core
  ((quota > 0)) || return 0
  local name=consul-dns-tcp-$$
  if [[ -w /sys/fs/cgroup/cpu ]]; then
    cgroup=/sys/fs/cgroup/cpu/$name; mkdir -p "$cgroup"
    echo 100000 >"$cgroup/cpu.cfs_period_us"; echo $((quota * 1000)) >"$cgroup/cpu.cfs_quota_us"
  elif [[ -w /sys/fs/cgroup/cgroup.procs ]]; then
    cgroup=/sys/fs/cgroup/$name; mkdir -p "$cgroup"; echo "$((quota * 1000)) 100000" >"$cgroup/cpu.max"
  else
    die "no writable cpu cgroup (run as root, or --quota 0)."
  fi
  echo "$1" >"$cgroup/cgroup.procs"
}
stop() {
  if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""; fi
  if [[ -n $cgroup ]]; then rmdir "$cgroup" 2>/dev/null || true; cgroup=""; fi
}
trap stop EXIT
start() { # start NAME PORT
  local name=$1 p=$2
  ! (exec 3<>/dev/tcp/127.0.0.1/"$p") 2>/dev/null || die "port $p is busy (pass --port)."
  if [[ $name == consul-dns ]]; then
    # shellcheck disable=SC2086
    taskset -c $server_cpu "$bin" --static "$data/catalog.json" --listen "127.0.0.1:$p" --udp-workers 1 \
      --http off --recursor none --log-level warn ${CONSUL_DNS_ARGS:-} >"$data/tcp-consul-dns.log" 2>&1 &
  else
    mkdir -p "$data/knot-tcp"
    cat >"$data/knot-tcp/knot.conf" <<EOF
server:
    rundir: "$data/knot-tcp"
    listen: 127.0.0.1@$p
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: "$data/knot-tcp"
zone:
  - domain: consul.
    file: "$data/consul.zone"
    journal-content: none
EOF
    taskset -c $server_cpu knotd -c "$data/knot-tcp/knot.conf" >"$data/tcp-knot.log" 2>&1 &
  fi
  pid=$!
  cap "$pid"
  local n
  for n in $(seq 600); do
    dig +tcp +short +tries=1 +time=1 @127.0.0.1 -p "$p" svc0.service.consul SRV 2>/dev/null | grep -q . && return 0
    kill -0 "$pid" 2>/dev/null || die "$name exited; see $data/tcp-$name.log."
    sleep 0.2
  done
  die "$name did not answer svc0.service.consul SRV over TCP within 120 s."
}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
port_of() { [[ $1 == consul-dns ]] && echo "$port" || echo $((port + 1)); }

median() { sort -n | awk '{ v[NR] = $1 } END { if (!NR) print 0; else print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
declare -A qps
run_qps() { # run_qps KIND NAME: one measured run; appends qps, prints a line
  local kind=$1 name=$2 p out q before after done_n
  p=$(port_of "$name"); start "$name" "$p"
  if [[ $kind == pipelined ]]; then
    taskset -c $client_cpu dnsperf -s 127.0.0.1 -p "$p" -m tcp -d "$data/mixed.queries" -l 1 -c "$clients" -q 100 >/dev/null 2>&1 || true
    before=$(ticks "$pid")
    out=$(taskset -c $client_cpu dnsperf -s 127.0.0.1 -p "$p" -m tcp -d "$data/mixed.queries" -l "$seconds" -c "$clients" -q 100 2>&1) \
      || die "dnsperf failed against $name: $out"
    after=$(ticks "$pid")
    q=$(awk '/Queries per second:/ {printf "%.0f", $4}' <<<"$out"); done_n=$(awk '/Queries completed:/ {print $3}' <<<"$out")
  else
    taskset -c $client_cpu "$tool" fresh "127.0.0.1:$p" "$data/mixed.queries" 1 "$fresh_clients" >/dev/null
    before=$(ticks "$pid")
    out=$(taskset -c $client_cpu "$tool" fresh "127.0.0.1:$p" "$data/mixed.queries" "$seconds" "$fresh_clients") \
      || die "tcp_load failed against $name: $out"
    after=$(ticks "$pid")
    q=$(awk '$1 == "qps" {print $2}' <<<"$out"); done_n=$(awk '$1 == "completed" {print $2}' <<<"$out")
    awk '$1 == "errors" && $2 > 0 {print "  (" $2 " failed queries)"}' <<<"$out" >&2
  fi
  stop
  [[ -n $q && ${done_n:-0} -gt 0 ]] || die "no answers from $name over TCP ($kind): $out"
  printf '%-9s %-10s %8s qps  %6.2f us CPU/query\n' "$kind" "$name" "$q" \
    "$(awk -v t=$((after - before)) -v n="$done_n" -v hz="$(getconf CLK_TCK)" 'BEGIN { print t / hz * 1e6 / n }')" >&2
  qps[$kind-$name]+="$q "
}

abuse() { # abuse NAME
  local name=$1 p
  p=$(port_of "$name")
  echo "== $name: 10,000 idle connections from 127.0.0.1, then 5 fresh queries from 127.0.0.2" >&2
  start "$name" "$p"
  taskset -c $client_cpu "$tool" idle "127.0.0.1:$p" 10000 5 | sed "s/^/$name idle /"
  stop
  echo "== $name: 1,100 connections each sending one query every 5 s for 40 s, a fresh query each second" >&2
  start "$name" "$p"
  taskset -c $client_cpu "$tool" drip "127.0.0.1:$p" 1100 5 40 | sed "s/^/$name drip /"
  stop
  echo "== $name: one connection pipelining large queries without pause, never reading (40 s)" >&2
  start "$name" "$p"
  taskset -c $client_cpu "$tool" hog "127.0.0.1:$p" 1000000 40 | sed "s/^/$name hog /" &
  local hog=$! held
  sleep 30
  # The client cannot tell a server that closed behind a full window from one that still holds
  # the connection; the socket's owner can: held = owned by the server process 30 s on.
  held=$(ss -Htnp state established "( sport = :$p )" 2>/dev/null | grep -c "pid=$pid," || true)
  echo "$name hog connections_held_by_server_after_30s $held"
  wait "$hog"
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
    local probe; probe=$(PROBE_FROM=127.0.0.2 taskset -c $client_cpu "$tool" idle "127.0.0.1:$p" 0 1 | awk '$1 == "probe_max_ms" {print $2}')
    echo "$name hog fresh_query_after_ms $probe"
  fi
  stop
}

cg_total() { awk '/^(summary|totals):/ {print $2; exit}' "$1"; }
callgrind() { # callgrind KIND: instructions per query
  local kind=$1 p=$port out base load n=0 q=0
  for load in 0 1; do
    out=$data/callgrind.$kind.$load
    ! (exec 3<>/dev/tcp/127.0.0.1/"$p") 2>/dev/null || die "port $p is busy (pass --port)."
    valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" --static "$data/catalog.json" \
      --listen "127.0.0.1:$p" --udp-workers 1 --http off --recursor none --log-level warn >"$data/callgrind.log" 2>&1 &
    pid=$!
    for n in $(seq 1200); do
      dig +tcp +short +tries=1 +time=1 @127.0.0.1 -p "$p" svc0.service.consul SRV 2>/dev/null | grep -q . && break
      kill -0 "$pid" 2>/dev/null || die "consul-dns under valgrind exited; see $data/callgrind.log."
      sleep 0.5
    done
    if ((load)); then
      if [[ $kind == pipelined ]]; then
        head -5000 "$data/mixed.queries" >"$data/callgrind.queries"
        q=$(dnsperf -s 127.0.0.1 -p "$p" -m tcp -d "$data/callgrind.queries" -n 1 -c 16 -q 100 -t 30 2>&1 | awk '/Queries completed:/ {print $3}')
      else
        q=$("$tool" fresh "127.0.0.1:$p" "$data/mixed.queries" 5 4 | awk '$1 == "completed" {print $2}')
      fi
    fi
    stop
    [[ -s $out ]] || die "callgrind wrote no $out."
    if ((load)); then
      awk -v a="$(cg_total "$out")" -v b="$base" -v q="$q" -v k="$kind" \
        'BEGIN { printf "callgrind %s: %d queries, %.0f instructions per query\n", k, q, (a - b) / q }'
    else
      base=$(cg_total "$out")
    fi
  done
}

echo "# TCP, 1000 services x 3 ($data), ${seconds}s runs, server on CPU $server_cpu capped at ${quota}%" >&2
for part in "${parts[@]}"; do
  if [[ $part == qps ]]; then
    for ((r = 1; r <= rounds; r++)); do
      for kind in pipelined fresh; do
        for name in consul-dns knot; do run_qps "$kind" "$name"; done
      done
    done
    for kind in pipelined fresh; do
      for name in consul-dns knot; do
        printf '%-9s %-10s median %8s qps\n' "$kind" "$name" "$(tr ' ' '\n' <<<"${qps[$kind-$name]}" | grep . | median)"
      done
    done
  elif [[ $part == abuse ]]; then
    abuse consul-dns
    ((knot)) && abuse knot
  else
    command -v valgrind >/dev/null || die "valgrind is missing: apt-get install -y valgrind."
    callgrind pipelined
    callgrind fresh
  fi
done
if [[ " ${parts[*]} " == *" qps "* ]]; then
  for kind in pipelined fresh; do
    ours=$(tr ' ' '\n' <<<"${qps[$kind-consul-dns]}" | grep . | median)
    theirs=$(tr ' ' '\n' <<<"${qps[$kind-knot]}" | grep . | median)
    awk -v a="$ours" -v b="$theirs" -v k="$kind" 'BEGIN { printf "ratio consul-dns/knot tcp-%s qps: %.2f\n", k, b ? a / b : 0 }'
  done
fi
