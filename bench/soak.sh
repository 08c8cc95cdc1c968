#!/usr/bin/env bash
# bench/soak.sh: a long run under load and catalog churn (not part of CI). For each source
# (the static file, the fake Consul of the tests): measure the most queries per second dnsperf
# gets answered, then run dnsperf at a share of that (80%) for N minutes while the catalog
# changes once a second (file: rewritten and renamed into place with one instance's port
# changed; Consul: one instance re-registered with another port). Reports queries sent and
# lost, latency p99 and max (from every query's own time), RSS at the start and the end of
# the soak (and the highest sample), SERVFAILs, WARN/ERROR log lines and sync failures.
#
# usage: bench/soak.sh [options]      (from the repository root; builds what it needs in release)
#   -m MIN        minutes of soak per source (5), after a warm-up under the same load and churn
#   -w SEC        length of that warm-up (30)
#   --source S    file | consul | both (both)
#   -s N          services (1000), each with -i N instances (3) on their own nodes
#   -c N          dnsperf clients (16)
#   --share PCT   load as a share of the measured maximum (80)
#   --port P      consul-dns listens on P (DNS) and P+1 (HTTP) (25453)
#   --profile P   cargo profile to build and run: release, or dev to try the script quickly (release)
# Output: one `soak <source>: …` line per source on stdout; exit 1 when RSS grew by more than
# 10%, a query was lost or answered SERVFAIL, or the daemon died; 2 when a tool is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=5 warmup=30 sources="file consul" services=1000 instances=3 clients=16 share=80 port=25453 profile=release
die() { echo "bench/soak.sh: $*" >&2; exit 2; }
while (($#)); do
  case $1 in
    -m) minutes=$2; shift 2 ;;
    -w) warmup=$2; shift 2 ;;
    --source) case $2 in both) sources="file consul" ;; file|consul) sources=$2 ;; *) die "--source file|consul|both" ;; esac; shift 2 ;;
    -s) services=$2; shift 2 ;;
    -i) instances=$2; shift 2 ;;
    -c) clients=$2; shift 2 ;;
    --share) share=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --profile) profile=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -e/{/^set -e/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
for tool in dnsperf dig taskset awk curl; do
  command -v "$tool" >/dev/null || die "$tool is missing: apt-get install -y dnsperf dnsutils util-linux gawk curl."
done
cargo build --profile "$profile" --quiet --bin consul-dns --example soak_consul
dir=target/$([[ $profile == dev ]] && echo debug || echo "$profile")
bin=$dir/consul-dns fake=$dir/examples/soak_consul
data=$(mktemp -d /tmp/consul-dns-soak.XXXXXX)
cpus=$(nproc)
server_cpu=0 client_cpu=$((cpus > 1 ? 1 : 0))
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

# The catalog as JSON; instance number $change (if any) on port 30000 + $change.
catalog() { # catalog CHANGE > file
  awk -v S="$services" -v I="$instances" -v C="${1:--1}" '
    function ip(n) { return sprintf("10.%d.%d.%d", int(n / 65536) % 256, int(n / 256) % 256, n % 256) }
    BEGIN {
      printf "{\"datacenter\": \"dc1\", \"nodes\": ["
      for (n = 0; n < S * I; n++) printf "%s{\"name\": \"node%d\", \"address\": \"%s\"}", (n ? ", " : ""), n, ip(n)
      printf "], \"services\": ["
      for (s = 0; s < S; s++) for (i = 0; i < I; i++) {
        n = s * I + i; port = (C >= 0 && n == C % (S * I)) ? 30000 + C % 20000 : 20000 + i
        printf "%s{\"name\": \"svc%d\", \"id\": \"svc%d-%d\", \"node\": \"node%d\", \"port\": %d, \"tags\": [\"primary\"]}",
          (n ? ", " : ""), s, s, i, n, port
      }
      print "]}"
    }'
}
awk -v S="$services" 'BEGIN { srand(42); for (q = 0; q < 100000; q++) { r = rand(); s = int(rand() * S)
  if (r < 0.5) print "svc" s ".service.consul SRV"; else if (r < 0.9) print "svc" s ".service.consul A"
  else print "missing" s ".service.consul A" } }' > "$data/queries"

rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
metric_sum() { # metric_sum PREFIX: the sum of a metric's samples
  curl -s "http://127.0.0.1:$((port + 1))/metrics" | awk -v p="$1" 'index($0, p) == 1 { s += $NF } END { print s + 0 }'
}

soak() { # soak SOURCE
  local source=$1 daemon churn="" url=""
  : > "$data/$source.log"
  if [[ $source == consul ]]; then
    mkfifo "$data/fake.in"
    "$fake" "$services" "$instances" < "$data/fake.in" > "$data/fake.out" 2>&1 &
    pids+=($!)
    exec 4> "$data/fake.in"
    for _ in $(seq 600); do url=$(awk '/^url / {print $2}' "$data/fake.out"); [[ -n $url ]] && break; sleep 0.1; done
    [[ -n $url ]] || die "the fake Consul did not start: $(cat "$data/fake.out")"
    set -- --consul "$url" --consul-wait 5m
  else
    catalog > "$data/catalog.json"
    set -- --static "$data/catalog.json"
  fi
  # (Children do not inherit fd 4, the fake Consul's stdin: closing it must stop the fake.)
  taskset -c "$server_cpu" "$bin" "$@" --listen "127.0.0.1:$port" --http "127.0.0.1:$((port + 1))" \
    --udp-workers 1 --recursor none --log-level info > /dev/null 2> "$data/$source.log" 4>&- &
  daemon=$!
  pids+=("$daemon")
  local last="svc$((services - 1)).service.consul" started=$SECONDS
  until (($(dig +short +tries=1 +time=1 @127.0.0.1 -p "$port" "$last" SRV | grep -c .) >= (instances < 3 ? instances : 3))); do
    kill -0 "$daemon" 2>/dev/null || die "consul-dns exited: $(tail -5 "$data/$source.log")"
    ((SECONDS - started < 120)) || die "consul-dns did not answer $last within 120 s."
    sleep 0.2
  done

  local max target
  max=$(taskset -c "$client_cpu" dnsperf -s 127.0.0.1 -p "$port" -d "$data/queries" -l 10 -c "$clients" -q 100 2>&1 |
    awk '/Queries per second:/ {printf "%.0f", $4}')
  [[ -n $max ]] || die "dnsperf measured nothing against $source."
  target=$((max * share / 100))

  if [[ $source == file ]]; then
    (for ((n = 0; ; n++)); do
      catalog "$n" > "$data/catalog.json.tmp" && mv "$data/catalog.json.tmp" "$data/catalog.json"
      sleep 1
    done) 4>&- &
    churn=$!
    pids+=("$churn")
  fi
  # Warm-up under the same load and churn (the first rebuilds and the allocator's caches grow
  # RSS once), then the soak proper: its start RSS is measured after this.
  local rss_idle publishes_before failures_before rss_start
  rss_idle=$(rss "$daemon")
  taskset -c "$client_cpu" dnsperf -s 127.0.0.1 -p "$port" -d "$data/queries" -l "$warmup" -c "$clients" \
    -q 500 -Q "$target" > /dev/null 2>&1 4>&- || true
  publishes_before=$(metric_sum consul_dns_sync_publishes_total)
  failures_before=$(metric_sum consul_dns_sync_failures_total)
  rss_start=$(rss "$daemon")
  echo "$rss_start" > "$data/$source.rss"
  (while kill -0 "$daemon" 2>/dev/null; do rss "$daemon" >> "$data/$source.rss" 2>/dev/null || true; sleep 5; done) 4>&- &
  pids+=($!)

  # Every query's latency through a log-scale histogram (5% steps): p99 and max.
  taskset -c "$client_cpu" dnsperf -s 127.0.0.1 -p "$port" -d "$data/queries" -l $((minutes * 60)) -c "$clients" \
    -q 500 -Q "$target" -v 2>&1 4>&- | awk -v out="$data/$source.summary" '
      /^> / { n++; t = $NF + 0; if (t > max) max = t; b = (t > 1e-6) ? int(log(t * 1e6) / log(1.05)) : 0; h[b]++
              if ($2 == "SERVFAIL") servfail++; next }
      { print > out }
      END {
        c = 0; p99 = 0
        for (b = 0; b < 1000; b++) { c += h[b]; if (c >= 0.99 * n) { p99 = exp((b + 1) * log(1.05)) / 1e6; break } }
        printf "answered %d servfail %d p99 %.6f max %.6f\n", n, servfail, p99, max > (out ".latency")
      }'
  local rss_end rss_max alive=yes
  kill -0 "$daemon" 2>/dev/null || alive=no
  rss_end=$(rss "$daemon" 2>/dev/null || echo 0)
  rss_max=$(sort -n "$data/$source.rss" | tail -1)
  local publishes failures changes
  publishes=$(($(metric_sum consul_dns_sync_publishes_total) - publishes_before))
  failures=$(($(metric_sum consul_dns_sync_failures_total) - failures_before))
  local warnings
  warnings=$(grep -cE ' (WARN|ERROR) ' "$data/$source.log" || true) # before the fake Consul stops
  [[ -n $churn ]] && kill "$churn" 2>/dev/null
  if [[ $source == consul ]]; then
    exec 4>&-
    for _ in $(seq 50); do changes=$(awk '/^changes / {print $2}' "$data/fake.out"); [[ -n $changes ]] && break; sleep 0.1; done
  else
    changes=$((minutes * 60 + warmup))
  fi
  kill "$daemon" 2>/dev/null || true
  wait "$daemon" 2>/dev/null || true
  rm -f "$data/fake.in"

  local sent lost answered servfail p99 maxl
  sent=$(awk '/Queries sent:/ {print $3}' "$data/$source.summary")
  lost=$(awk '/Queries lost:/ {print $3}' "$data/$source.summary")
  read -r _ answered _ servfail _ p99 _ maxl < "$data/$source.summary.latency"
  printf 'soak %s: %d min at %d qps (%d%% of the measured %d), %s catalog changes in all (%d publishes during the soak): sent %s, lost %s, SERVFAIL %d, latency p99 %.2f ms, max %.2f ms; RSS %d kB idle, %d kB at start (after %d s of warm-up), %d kB at end (%+.1f%%), highest %d kB; %s WARN/ERROR lines, %d sync failures; daemon alive: %s\n' \
    "$source" "$minutes" "$target" "$share" "$max" "${changes:-?}" "$publishes" "$sent" "$lost" "$servfail" \
    "$(awk -v v="$p99" 'BEGIN { print v * 1000 }')" "$(awk -v v="$maxl" 'BEGIN { print v * 1000 }')" \
    "$rss_idle" "$rss_start" "$warmup" "$rss_end" "$(awk -v a="$rss_start" -v b="$rss_end" 'BEGIN { print (b - a) * 100 / a }')" \
    "$rss_max" "$warnings" "$failures" "$alive"
  local grew
  grew=$(awk -v a="$rss_start" -v b="$rss_end" 'BEGIN { print (b > a * 1.10) ? 1 : 0 }')
  [[ $alive == yes && $lost == 0 && $servfail == 0 && $grew == 0 ]] || status=1
}

status=0
for source in $sources; do soak "$source"; done
echo "logs and raw output in $data" >&2
exit "$status"
