#!/bin/sh
# Kong configured as code: the services and routes the seed stack creates by hand in Konga.
# Run once by the compose service kong-config against Kong's admin API; every call is a PUT
# on the entity's name, so running it again changes nothing.
#   KONG_ADMIN=http://172.40.0.4:8001 deploy/kong/configure.sh
set -eu
admin=${KONG_ADMIN:-http://172.40.0.4:8001}

put() {
  # $1 path, then form fields; fails on any answer but 200/201.
  path=$1
  shift
  code=$(curl -sS -o /tmp/kong-answer -w '%{http_code}' -X PUT "$admin$path" "$@")
  case $code in
    200 | 201) echo "kong-config: PUT $path: $code" ;;
    *) echo "kong-config: PUT $path answered $code: $(cat /tmp/kong-answer)" >&2; exit 1 ;;
  esac
}

for pair in user:8002 order:8003; do
  svc=${pair%:*}
  port=${pair#*:}
  # The host is the Consul name: Kong asks consul-dns for its SRV records (address and port
  # of every healthy instance) and balances over them; the port below (the services' own) is only used if SRV gives none.
  put "/services/$svc" --data protocol=http --data "host=$svc.service.consul" --data "port=$port"
  # strip_path=false: /user/hello reaches the service as /user/hello, as the seed sets it.
  put "/services/$svc/routes/$svc" --data "paths[]=/$svc" --data strip_path=false
done
