#!/usr/bin/env bash
# Controls one gunicorn instance of the example fleet; nodrop's command templates call it:
#   fleet.sh FLEET_DIR start PORT [ADDRESS] | stop PORT | update PORT VERSION [RELEASE_DIR]
# Releases live in ./releases/<version>; an instance's current release is a symlink.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
fleet=$1 cmd=$2 port=$3
dir="$fleet/instances/$port"
pidfile="$dir/gunicorn.pid"

# A process counts as running unless it is gone or a zombie: gunicorn --daemon re-parents the master
# to pid 1, and an init that reaps late (some containers' do, by a second or more) would otherwise
# make every stop look that much slower and a start refuse a port whose process has already exited.
alive() {
  local stat
  kill -0 "$1" 2>/dev/null || return 1
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}
running() { [ -f "$pidfile" ] && alive "$(cat "$pidfile")"; }

# Fault injection for tests, by files in the instance's directory: fail-<command> makes that command
# fail every time, fail-once-<command> the next time only, hang-once-<command> makes it hang.
if [ -e "$dir/fail-$cmd" ]; then echo "instance $port: $cmd failed (injected by $dir/fail-$cmd)" >&2; exit 1; fi
if [ -e "$dir/fail-once-$cmd" ]; then rm -f "$dir/fail-once-$cmd"; echo "instance $port: $cmd failed once (injected)" >&2; exit 1; fi
if [ -e "$dir/hang-once-$cmd" ]; then rm -f "$dir/hang-once-$cmd"; sleep 600; fi

case "$cmd" in
  update)
    # The release is ./releases/<version>, or the directory given (nodrop's {release}: what a
    # deploy with a release section put on the host).
    version=$4 release=${5:-$here/releases/$4}
    [ -f "$release/VERSION" ] || { echo "no release $version at $release" >&2; exit 1; }
    if running; then echo "instance $port is running; stop it before updating" >&2; exit 1; fi
    mkdir -p "$dir"
    ln -sfn "$release" "$dir/current"
    ;;
  start)
    [ -L "$dir/current" ] || { echo "instance $port has no release; update it first" >&2; exit 1; }
    if running; then echo "instance $port is already running" >&2; exit 1; fi
    # gthread workers: slow requests must not block the others. The graceful timeout bounds a stop
    # (10 s; a fleet's graceful-timeout file, whole seconds, sets another, so tests of cut
    # connections need not wait 10 s per stop).
    address=${4:-127.0.0.1}
    graceful=10
    if [ -f "$fleet/graceful-timeout" ]; then
      graceful=$(cat "$fleet/graceful-timeout")
      case "$graceful" in ''|*[!0-9]*) echo "$fleet/graceful-timeout: not a whole number of seconds" >&2; exit 1 ;; esac
    fi
    gunicorn --daemon --pid "$pidfile" --bind "$address:$port" \
      --workers 2 --threads 8 --worker-class gthread --graceful-timeout "$graceful" \
      --chdir "$here/app" --env "APP_RELEASE=$dir/current" --env "APP_INSTANCE=$port" \
      --error-logfile "$dir/gunicorn.log" app:application
    ;;
  stop)
    if ! running; then rm -f "$pidfile"; exit 0; fi
    pid=$(cat "$pidfile")
    kill -TERM "$pid"
    # SIGTERM is graceful: in-flight requests finish (within --graceful-timeout), then the master exits.
    for _ in $(seq 1 250); do alive "$pid" || { rm -f "$pidfile"; exit 0; }; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
    ;;
  *) echo "usage: fleet.sh FLEET_DIR start|stop|update PORT [VERSION]" >&2; exit 2 ;;
esac
