#!/usr/bin/env bash
# Naive baseline 1: stop everything, switch, start everything.
#   stop-all-switch-start-all.sh FLEET_DIR VERSION PORT...
#
# Models the simplest hand-rolled deploy (`systemctl stop app@*; ln -sfn ...; systemctl start app@*`):
# every instance is stopped at once (SIGTERM, in parallel), switched to VERSION, started again, and
# the script waits until each one answers /health with X-App-Version: VERSION (60 s at most, else
# exit 1). nginx is not touched.
#
# Why it loses requests: from the first SIGTERM until the first new instance listens, no upstream
# exists, and every request in that window fails (502). Worse, the outage outlasts the script:
# nginx's passive health check (the defaults max_fails=1 fail_timeout=10s) marks each instance that
# refused a connection as down for 10 s, and with all of them marked it answers 502 at once ("no
# live upstreams") without trying, even though the instances are back and healthy. The /health
# check below goes to the instances directly, so it cannot see that. Requests in flight at the stop
# do finish (gunicorn's graceful stop): the loss is in the new ones.
# Instances bind to 127.0.0.1, or to $ADDRESS when set.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
fleet_sh="$here/../fleet.sh"
if [ $# -lt 3 ]; then echo "usage: $0 FLEET_DIR VERSION PORT..." >&2; exit 2; fi
fleet=$1 version=$2
shift 2
ports=("$@")
address=${ADDRESS:-127.0.0.1}

now_us() { echo "${EPOCHREALTIME//[!0-9]/}"; } # locale-proof: EPOCHREALTIME's separator may be a comma
t0=$(now_us)
log() { local us=$(($(now_us) - t0)); printf '[stop-all +%d.%03ds] %s\n' $((us / 1000000)) $((us / 1000 % 1000)) "$*" >&2; }

# True when the instance answers /health with a 2xx and X-App-Version: $version. The headers go
# into a variable first: piping curl into `grep -q` can kill curl with SIGPIPE, which pipefail
# would report as a failure.
healthy() {
  local headers
  headers=$(curl -fsS -o /dev/null -D - --max-time 2 "http://$address:$1/health" 2>/dev/null) || return 1
  grep -qix "x-app-version: $version" <<<"${headers//$'\r'/}"
}

# In parallel, as `systemctl stop app@*` would; wait for all, then fail if any failed.
run_all() {
  local pids=() failed=0 port
  for port in "${ports[@]}"; do "$@" "$port" & pids+=($!); done
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  return "$failed"
}
stop() { "$fleet_sh" "$fleet" stop "$1"; }
start() { "$fleet_sh" "$fleet" start "$1" "$address"; }

log "stop ${ports[*]} (SIGTERM, in parallel)"
run_all stop || { log "a stop failed"; exit 1; }
for port in "${ports[@]}"; do
  log "update $port -> $version"
  "$fleet_sh" "$fleet" update "$port" "$version"
done
log "start ${ports[*]} (in parallel)"
run_all start || { log "a start failed"; exit 1; }
log "wait for ${ports[*]} to answer /health on $version (60 s at most)"
deadline=$((SECONDS + 60))
waiting=("${ports[@]}")
while [ ${#waiting[@]} -gt 0 ]; do
  still=()
  for port in "${waiting[@]}"; do
    if healthy "$port"; then log "healthy $port on $version"; else still+=("$port"); fi
  done
  waiting=("${still[@]+"${still[@]}"}")
  [ ${#waiting[@]} -eq 0 ] && break
  if [ "$SECONDS" -ge "$deadline" ]; then log "timed out: ${waiting[*]} not healthy on $version after 60 s"; exit 1; fi
  sleep 0.2
done
log "done: ${ports[*]} on $version"
