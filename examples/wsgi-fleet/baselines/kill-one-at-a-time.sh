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
# Instances bind to 127.0.0.1, or to $ADDRESS when set.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
fleet_sh="$here/../fleet.sh"
if [ $# -lt 3 ]; then echo "usage: $0 FLEET_DIR VERSION PORT..." >&2; exit 2; fi
fleet=$1 version=$2
shift 2
address=${ADDRESS:-127.0.0.1}

now_us() { echo "${EPOCHREALTIME//[!0-9]/}"; } # locale-proof: EPOCHREALTIME's separator may be a comma
t0=$(now_us)
log() { local us=$(($(now_us) - t0)); printf '[one-at-a-time +%d.%03ds] %s\n' $((us / 1000000)) $((us / 1000 % 1000)) "$*" >&2; }

# True when the instance answers /health with a 2xx and X-App-Version: $version. The headers go
# into a variable first: piping curl into `grep -q` can kill curl with SIGPIPE, which pipefail
# would report as a failure.
healthy() {
  local headers
  headers=$(curl -fsS -o /dev/null -D - --max-time 2 "http://$address:$1/health" 2>/dev/null) || return 1
  grep -qix "x-app-version: $version" <<<"${headers//$'\r'/}"
}

for port in "$@"; do
  log "stop $port (SIGTERM)"
  "$fleet_sh" "$fleet" stop "$port"
  log "update $port -> $version"
  "$fleet_sh" "$fleet" update "$port" "$version"
  log "start $port"
  "$fleet_sh" "$fleet" start "$port" "$address"
  log "wait for $port to answer /health on $version (60 s at most)"
  deadline=$((SECONDS + 60))
  until healthy "$port"; do
    if [ "$SECONDS" -ge "$deadline" ]; then log "timed out: $port not healthy on $version after 60 s"; exit 1; fi
    sleep 0.2
  done
  log "healthy $port on $version"
done
log "done: $* on $version"
