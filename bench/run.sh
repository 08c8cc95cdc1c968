#!/usr/bin/env bash
# bench/run.sh: consul-dns measured against Knot DNS serving the same generated catalog, in one
# run, rounds alternating (consul-dns, knot, consul-dns, …), or against its own static mode.
# See bench/README.md for why the server is capped and how to read the result.
#
# usage: bench/run.sh [options]            (from the repository root, after cargo build --release)
#   --mode M      what to measure (udp):
#                 udp, tcp        queries per second under dnsperf (tcp = --tcp)
#                 startup         time from start to the first complete answer, and RSS then
#                                 (both servers uncapped, on every CPU; default -s 100000)
#                 consul-sync     Consul mode against the fake Consul: first sync time, requests,
#                                 peak concurrent requests (default -s 10000 -i 10)
#                 rss             RSS in Consul mode and in static mode, same catalog (ditto)
#                 change-latency  change -> DNS p50/p99 over --changes N, idle and while dnsperf
#                                 offers --load QPS (ditto)
#                 The Consul modes run target/release/examples/consul_scale (cargo build
#                 --release --bin consul-dns --example consul_scale).
#   --changes N   changes for change-latency (200)
#   --load QPS    offered load during the second change-latency run (20000; 0 = idle run only)
#   -s N          services in the catalog (1000)
#   -i N          instances per service, each on its own node (3)
#   --queries Q   mixed (50% SRV, 40% A, 10% A for missing names) | hot (one SRV name) (mixed)
#   --tcp         dnsperf over TCP (default UDP)
#   -l SEC        length of one dnsperf run (10)
#   -c N          dnsperf clients: sockets or connections (16)
#   --rounds R    rounds; each round measures both servers once (3)
#   --quota PCT   CPU share of one core the server may use, via a cpu cgroup (50; 0 = no cap)
#   --port P      first port; consul-dns listens on P, Knot on P+1 (25353)
#   --bin PATH    the consul-dns binary (target/release/consul-dns)
#   --data DIR    where the catalog is generated (/tmp/consul-dns-bench/<s>x<i>)
# udp/tcp: the last line of stdout is `ratio consul-dns/knot qps: R` (median over median);
# the line before it, `ratio knot/consul-dns cpu-per-query: R`, compares server CPU time per
# answered query (above 1: consul-dns spends less), which drifts less on a busy machine.
# startup: the last line is `ratio consul-dns/knot startup: R` (median over median; below 1:
# consul-dns answers sooner). The Consul modes print the bench's own report.
# Exit 0, or 2 when a tool is missing, a port is busy or a server answers wrongly.
set -euo pipefail

services="" instances="" queries=mixed proto=udp seconds=10 clients=16 rounds=3 quota=50
port=25353 bin=target/release/consul-dns data="" mode=udp changes=200 load=20000
die() { echo "bench/run.sh: $*" >&2; exit 2; }
while (($#)); do
  case $1 in
    -s) services=$2; shift 2 ;;
    -i) instances=$2; shift 2 ;;
    --queries) queries=$2; shift 2 ;;
    --tcp) proto=tcp; shift ;;
    -l) seconds=$2; shift 2 ;;
    -c) clients=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --quota) quota=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --mode) mode=$2; shift 2 ;;
    --changes) changes=$2; shift 2 ;;
    --load) load=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -e/{/^set -e/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[[ $queries == mixed || $queries == hot ]] || die "--queries must be mixed or hot, not $queries."
case $mode in
  udp) ;;
  tcp) proto=tcp ;;
  startup) services=${services:-100000} ;;
  consul-sync|rss|change-latency)
    scale=target/release/examples/consul_scale
    [[ -x $scale ]] || die "$scale is not there: cargo build --release --bin consul-dns --example consul_scale."
    [[ -x $bin ]] || die "$bin is not there: run cargo build --release first (or pass --bin)."
    args=("${services:-10000}" "${instances:-10}" 32 --no-reregister)
    case $mode in
      consul-sync) CONSUL_DNS_BIN=$bin NO_STATE_DIR=1 "$scale" "${args[@]}" --changes 2 ;;
      rss) CONSUL_DNS_BIN=$bin NO_STATE_DIR=1 "$scale" "${args[@]}" --changes 2 --compare-static ;;
      change-latency)
        command -v dnsperf >/dev/null || die "dnsperf is missing: apt-get install -y dnsperf."
        echo "# idle" >&2
        CONSUL_DNS_BIN=$bin "$scale" "${args[@]}" --changes "$changes"
        if ((load > 0)); then
          echo "# while dnsperf offers $load qps" >&2
          CONSUL_DNS_BIN=$bin "$scale" "${args[@]}" --changes "$changes" --load "$load"
        fi
        ;;
    esac
    exit 0
    ;;
  *) die "--mode must be udp, tcp, startup, consul-sync, rss or change-latency, not $mode." ;;
esac
services=${services:-1000} instances=${instances:-3}
for tool in dnsperf knotd dig taskset awk; do
  command -v "$tool" >/dev/null || die "$tool is missing: apt-get install -y dnsperf knot dnsutils util-linux gawk."
done
[[ -x $bin ]] || die "$bin is not there: run cargo build --release first (or pass --bin)."
data=${data:-/tmp/consul-dns-bench/${services}x${instances}}
cpus=$(nproc)
server_cpu=0 client_cpu=$((cpus > 1 ? 1 : 0))

# ---- the catalog: one generator writes both servers' input and the query file ----------------
generate() {
  mkdir -p "$data"
  awk -v S="$services" -v I="$instances" -v dir="$data" -v seed=42 '
    function ip(n) { return sprintf("10.%d.%d.%d", int(n / 65536) % 256, int(n / 256) % 256, n % 256) }
    BEGIN {
      json = dir "/catalog.json"; zone = dir "/consul.zone"
      printf "{\"datacenter\": \"dc1\", \"nodes\": [" > json
      printf "$ORIGIN consul.\n$TTL 5\n@ SOA ns.consul. hostmaster.consul. 1 3600 600 86400 5\n@ NS ns\nns A 127.0.0.1\n" > zone
      for (s = 0; s < S; s++) for (i = 0; i < I; i++) {
        n = s * I + i
        printf "%s{\"name\": \"node%d\", \"address\": \"%s\"}", (n ? ", " : ""), n, ip(n) > json
        printf "node%d.node.dc1 A %s\n", n, ip(n) > zone
        printf "svc%d.service A %s\n", s, ip(n) > zone
        printf "svc%d.service SRV 1 1 %d node%d.node.dc1\n", s, 20000 + i, n > zone
      }
      printf "], \"services\": [" > json
      for (s = 0; s < S; s++) for (i = 0; i < I; i++) {
        n = s * I + i
        printf "%s{\"name\": \"svc%d\", \"id\": \"svc%d-%d\", \"node\": \"node%d\", \"port\": %d, \"tags\": [\"primary\"]}",
          (n ? ", " : ""), s, s, i, n, 20000 + i > json
      }
      print "]}" > json
      srand(seed)
      for (q = 0; q < 100000; q++) {
        r = rand(); s = int(rand() * S)
        if (r < 0.5) print "svc" s ".service.consul SRV" > (dir "/mixed.queries")
        else if (r < 0.9) print "svc" s ".service.consul A" > (dir "/mixed.queries")
        else print "missing" s ".service.consul A" > (dir "/mixed.queries")
      }
      print "svc0.service.consul SRV" > (dir "/hot.queries")
    }'
  touch "$data/.complete"
}
[[ -f $data/.complete ]] || { echo "generating ${services}x${instances} into $data" >&2; generate; }

# ---- starting and stopping servers, each in its own cpu cgroup --------------------------------
cgroup=""
cap_cpu() { # cap_cpu PID: limit PID to $quota% of one core
  ((quota > 0)) || return 0
  local name=consul-dns-bench-$$
  if [[ -w /sys/fs/cgroup/cpu ]]; then           # cgroup v1
    cgroup=/sys/fs/cgroup/cpu/$name; mkdir -p "$cgroup"
    echo 100000 > "$cgroup/cpu.cfs_period_us"; echo $((quota * 1000)) > "$cgroup/cpu.cfs_quota_us"
    echo "$1" > "$cgroup/cgroup.procs"
  elif [[ -w /sys/fs/cgroup/cgroup.procs ]]; then # cgroup v2
    cgroup=/sys/fs/cgroup/$name; mkdir -p "$cgroup"
    echo "$((quota * 1000)) 100000" > "$cgroup/cpu.max"; echo "$1" > "$cgroup/cgroup.procs"
  else
    die "no writable cpu cgroup to cap the server (run as root, or pass --quota 0)."
  fi
}
uncap() { [[ -z $cgroup ]] || { rmdir "$cgroup" 2>/dev/null || true; cgroup=""; }; }

write_knot_conf() { # write_knot_conf PORT
  mkdir -p "$data/knot"
  cat > "$data/knot/knot.conf" <<EOF
server:
    rundir: "$data/knot"
    listen: 127.0.0.1@$1
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: "$data/knot"
zone:
  - domain: consul.
    file: "$data/consul.zone"
    journal-content: none
EOF
}

pid=""
stop_server() {
  if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""; fi
  uncap
}
trap stop_server EXIT

start_server() { # start_server NAME PORT
  local name=$1 p=$2
  ! (exec 3<>/dev/tcp/127.0.0.1/"$p") 2>/dev/null || die "port $p is busy (pass --port)."
  case $name in
    consul-dns)
      taskset -c "$server_cpu" "$bin" --static "$data/catalog.json" --listen "127.0.0.1:$p" \
        --udp-workers 1 --http off --recursor none --log-level warn >"$data/consul-dns.log" 2>&1 &
      ;;
    knot)
      write_knot_conf "$p"
      taskset -c "$server_cpu" knotd -c "$data/knot/knot.conf" >"$data/knot.log" 2>&1 &
      ;;
  esac
  pid=$!
  cap_cpu "$pid"
  # Ready when the last service answers with every instance.
  local want=$instances last="svc$((services - 1)).service.consul" got=0 started=$SECONDS
  ((want <= 3)) || want=3 # 512-byte UDP answers: at most three records without EDNS
  while ((SECONDS - started < 120)); do
    got=$(dig +short +tries=1 +time=1 @127.0.0.1 -p "$p" "$last" SRV 2>/dev/null | grep -c . || true)
    ((got >= want)) && return 0
    kill -0 "$pid" 2>/dev/null || die "$name exited; see $data/$name.log."
    sleep 0.2
  done
  die "$name did not answer $last SRV with $want records within 120 s."
}

ms_now() { date +%s%3N; }
rss_mb() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

result_ms="" result_rss=""
time_startup() { # time_startup NAME PORT: sets result_ms (start -> first complete answer) and result_rss
  local name=$1 p=$2 want=$instances last="svc$((services - 1)).service.consul" started got
  ((want <= 3)) || want=3
  ! (exec 3<>/dev/tcp/127.0.0.1/"$p") 2>/dev/null || die "port $p is busy (pass --port)."
  [[ $name == knot ]] && rm -rf "$data/knot/timers" "$data/knot/journal" "$data/knot/catalog"
  started=$(ms_now)
  case $name in
    consul-dns)
      "$bin" --static "$data/catalog.json" --listen "127.0.0.1:$p" \
        --http off --recursor none --log-level warn >"$data/consul-dns.log" 2>&1 &
      ;;
    knot) knotd -c "$data/knot/knot.conf" >"$data/knot.log" 2>&1 & ;;
  esac
  pid=$!
  while :; do
    got=$(dig +short +tries=1 +time=1 @127.0.0.1 -p "$p" "$last" SRV 2>/dev/null | grep -c . || true)
    ((got >= want)) && break
    kill -0 "$pid" 2>/dev/null || die "$name exited; see $data/$name.log."
    (($(ms_now) - started < 300000)) || die "$name did not answer $last SRV within 300 s."
    sleep 0.01
  done
  result_ms=$(($(ms_now) - started))
  result_rss=$(rss_mb "$pid")
  stop_server
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

result_qps="" result_cpu=""
measure() { # measure NAME PORT: one dnsperf run; sets result_qps and result_cpu (µs per query)
  local name=$1 p=$2 before after out completed
  start_server "$name" "$p"
  taskset -c "$client_cpu" dnsperf -s 127.0.0.1 -p "$p" -m "$proto" -d "$data/$queries.queries" \
    -l 1 -c "$clients" -q 100 >/dev/null 2>&1 || true # warm-up
  before=$(cpu_ticks "$pid")
  out=$(taskset -c "$client_cpu" dnsperf -s 127.0.0.1 -p "$p" -m "$proto" -d "$data/$queries.queries" \
    -l "$seconds" -c "$clients" -q 100 2>&1) || die "dnsperf failed against $name: $out"
  after=$(cpu_ticks "$pid")
  stop_server
  result_qps=$(awk '/Queries per second:/ {printf "%.0f", $4}' <<<"$out")
  completed=$(awk '/Queries completed:/ {print $3}' <<<"$out")
  [[ -n $result_qps && ${completed:-0} -gt 0 ]] || die "no answers from $name: $out"
  result_cpu=$(awk -v t=$((after - before)) -v n="$completed" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
}

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

if [[ $mode == startup ]]; then
  declare -A ms_of rss_of
  echo "# start-up to first answer: $services services x $instances, $rounds rounds, uncapped" >&2
  for ((round = 1; round <= rounds; round++)); do
    for name in consul-dns knot; do
      p=$port; [[ $name == knot ]] && { p=$((port + 1)); write_knot_conf "$p"; }
      time_startup "$name" "$p"
      printf 'round %d  %-10s %8s ms  RSS %7s MB\n' "$round" "$name" "$result_ms" "$result_rss" >&2
      ms_of[$name]+="$result_ms "; rss_of[$name]+="$result_rss "
    done
  done
  for name in consul-dns knot; do
    printf '%-10s median %8s ms  RSS %7s MB\n' "$name" \
      "$(tr ' ' '\n' <<<"${ms_of[$name]}" | grep . | median)" "$(tr ' ' '\n' <<<"${rss_of[$name]}" | grep . | median)"
  done
  ours=$(tr ' ' '\n' <<<"${ms_of[consul-dns]}" | grep . | median)
  theirs=$(tr ' ' '\n' <<<"${ms_of[knot]}" | grep . | median)
  awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "ratio consul-dns/knot startup: %.2f\n", a / b }'
  exit 0
fi

declare -A qps_of cpu_of
echo "# $services services x $instances, $queries queries, $proto, ${seconds}s runs, server capped at ${quota}% of CPU $server_cpu" >&2
for ((round = 1; round <= rounds; round++)); do
  for name in consul-dns knot; do
    p=$port; [[ $name == knot ]] && p=$((port + 1))
    measure "$name" "$p"
    printf 'round %d  %-10s %8s qps  %6s us CPU/query\n' "$round" "$name" "$result_qps" "$result_cpu" >&2
    qps_of[$name]+="$result_qps "; cpu_of[$name]+="$result_cpu "
  done
done
for name in consul-dns knot; do
  printf '%-10s median %8s qps  %6s us CPU/query\n' "$name" \
    "$(tr ' ' '\n' <<<"${qps_of[$name]}" | grep . | median)" "$(tr ' ' '\n' <<<"${cpu_of[$name]}" | grep . | median)"
done
cpu_ours=$(tr ' ' '\n' <<<"${cpu_of[consul-dns]}" | grep . | median)
cpu_theirs=$(tr ' ' '\n' <<<"${cpu_of[knot]}" | grep . | median)
awk -v a="$cpu_theirs" -v b="$cpu_ours" 'BEGIN { printf "ratio knot/consul-dns cpu-per-query: %.2f\n", a / b }'
ours=$(tr ' ' '\n' <<<"${qps_of[consul-dns]}" | grep . | median)
theirs=$(tr ' ' '\n' <<<"${qps_of[knot]}" | grep . | median)
awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "ratio consul-dns/knot qps: %.2f\n", a / b }'
