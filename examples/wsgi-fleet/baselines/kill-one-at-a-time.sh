#!/usr/bin/env bash
# Naive baseline 2: restart the instances one at a time, and let nginx cope.
#   kill-one-at-a-time.sh FLEET_DIR VERSION PORT...
#
# Models a hand-rolled rolling restart (`for h in ...; do ssh $h 'ln -sfn ...; systemctl restart
# app'; done`): for each instance in turn, stop it (SIGTERM, as systemctl restart does), switch it to
# VERSION, start it, and wait until it answers /health with X-App-Version: VERSION (60 s at most
# per instance, else exit 1). nginx is never told: it notices the dead instance by itself and
# routes around it (proxy_next_upstream error timeout).
#
# Why it loses requests even though only one instance is ever down: nginx learns an instance is
# gone by failing to connect to it; that request goes to the next instance (no loss: nothing was
# sent), but nginx's passive health check (the defaults max_fails=1 fail_timeout=10s) then keeps
# the instance out for 10 s, long after it is back and healthy. Restarting the next one within
# those 10 s shrinks the pool again; with restarts ~2 s apart, by the last instance every one is
# marked down and nginx answers 502 at once ("no live upstreams") until the first mark expires: a
# full outage of several seconds. Until then, the remaining instances carry the whole load.
set -euo pipefail
log_tag=one-at-a-time
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

for port in "${ports[@]}"; do
  log "stop $port (SIGTERM)"
  "$fleet_sh" "$fleet" stop "$port"
  log "update $port -> $version"
  "$fleet_sh" "$fleet" update "$port" "$version"
  log "start $port"
  "$fleet_sh" "$fleet" start "$port" "$address"
  wait_healthy "$port"
done
log "done: ${ports[*]} on $version"
