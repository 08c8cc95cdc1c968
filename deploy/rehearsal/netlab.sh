#!/usr/bin/env bash
# A private copy of a container network on this machine, for rehearsing the stack on its real
# addresses without Docker: one network namespace per host, each with an eth0 plugged into a
# bridge that lives in a hub namespace of its own. Nothing is created in the namespace this
# script is called from (no interface, no address, no route), and no host namespace has a
# route beyond its own subnet, so no packet can leave the lab. Needs root and iproute2.
#
#   netlab.sh up PREFIX NAME=ADDR/LEN...  hosts PREFIX-NAME (and the hub PREFIX-hub)
#   netlab.sh resolver PREFIX NAME IP     the /etc/resolv.conf NAME sees under `ip netns exec`
#   netlab.sh exec PREFIX NAME CMD...     runs CMD on host NAME
#   netlab.sh down PREFIX                 ends what runs in the lab and removes it
#
# e.g.  netlab.sh up lab consul=172.40.0.2/24 kong=172.40.0.4/24
#       netlab.sh exec lab kong ping -c1 172.40.0.2
#       netlab.sh down lab
set -euo pipefail

usage() {
  sed -n '8,11p' "$0" >&2
  exit 2
}

# Namespaces of the lab PREFIX, one per line.
namespaces() {
  ip netns list | awk '{print $1}' | grep -E "^$1-" || true
}

down() {
  local prefix=$1 ns pid
  for ns in $(namespaces "$prefix"); do
    # Only the lab's own processes run in its namespaces.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do
      kill "$pid" 2>/dev/null || true
    done
  done
  for ns in $(namespaces "$prefix"); do
    ip netns del "$ns"
    rm -rf "/etc/netns/$ns"
  done
}

up() {
  local prefix=$1 hub=$1-hub i=0 spec name addr ns
  shift
  [[ $# -gt 0 ]] || usage
  if [[ -n $(namespaces "$prefix") ]]; then
    echo "netlab: a lab named $prefix exists already; take it down first" >&2
    exit 1
  fi
  trap 'down "$prefix"' ERR
  ip netns add "$hub"
  ip -n "$hub" link add br0 type bridge
  ip -n "$hub" link set br0 up
  for spec in "$@"; do
    name=${spec%%=*}
    addr=${spec#*=}
    if [[ $name == "$spec" || $addr != */* || $name == hub ]]; then
      echo "netlab: '$spec' is not NAME=ADDR/LEN (e.g. kong=172.40.0.4/24)" >&2
      false
    fi
    ns=$prefix-$name
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    # Both ends are made inside the lab: the hub's port, and eth0 straight in the host.
    ip -n "$hub" link add "p$i" type veth peer name eth0 netns "$ns"
    ip -n "$hub" link set "p$i" master br0 up
    ip -n "$ns" addr add "$addr" dev eth0
    ip -n "$ns" link set eth0 up
    i=$((i + 1))
  done
  trap - ERR
}

resolver() {
  local ns=$1-$2
  ip netns list | awk '{print $1}' | grep -qx "$ns" || { echo "netlab: no host $ns" >&2; exit 1; }
  mkdir -p "/etc/netns/$ns"
  printf 'nameserver %s\n' "$3" >"/etc/netns/$ns/resolv.conf"
}

[[ $# -ge 2 ]] || usage
command=$1
shift
case $command in
  up) up "$@" ;;
  down) [[ $# -eq 1 ]] || usage; down "$1" ;;
  resolver) [[ $# -eq 3 ]] || usage; resolver "$@" ;;
  exec) [[ $# -ge 3 ]] || usage; ns=$1-$2; shift 2; exec ip netns exec "$ns" "$@" ;;
  *) usage ;;
esac
