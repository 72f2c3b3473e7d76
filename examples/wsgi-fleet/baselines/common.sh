# Shared by the baseline scripts (sourced, not run): their arguments, a timed log, and the health
# wait a hand-rolled deploy script would have. Expects $log_tag set by the caller.
#   SCRIPT FLEET_DIR VERSION PORT...
# Instances bind to 127.0.0.1, or to $ADDRESS when set.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
fleet_sh="$here/../fleet.sh"
if [ $# -lt 3 ]; then echo "usage: $0 FLEET_DIR VERSION PORT..." >&2; exit 2; fi
fleet=$1 version=$2
shift 2
ports=("$@")
address=${ADDRESS:-127.0.0.1}

now_us() { echo "${EPOCHREALTIME//[!0-9]/}"; } # locale-proof: EPOCHREALTIME's separator may be a comma
t0=$(now_us)
log() { local us=$(($(now_us) - t0)); printf '[%s +%d.%03ds] %s\n' "$log_tag" $((us / 1000000)) $((us / 1000 % 1000)) "$*" >&2; }

# True when the instance answers /health with a 2xx and X-App-Version: $version. The headers go
# into a variable first: piping curl into `grep -q` can kill curl with SIGPIPE, which pipefail
# would report as a failure.
healthy() {
  local headers
  headers=$(curl -fsS -o /dev/null -D - --max-time 2 "http://$address:$1/health" 2>/dev/null) || return 1
  grep -qix "x-app-version: $version" <<<"${headers//$'\r'/}"
}

# Waits until every given port answers /health on $version; exits 1 after 60 s.
wait_healthy() {
  local deadline=$((SECONDS + 60)) waiting=("$@") still port
  log "wait for $* to answer /health on $version (60 s at most)"
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
}
