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
# check (wait_healthy) goes to the instances directly, so it cannot see that. Requests in flight at the stop
# do finish (gunicorn's graceful stop): the loss is in the new ones.
set -euo pipefail
log_tag=stop-all
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

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
wait_healthy "${ports[@]}"
log "done: ${ports[*]} on $version"
