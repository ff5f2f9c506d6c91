#!/usr/bin/env bash
# Starts the local services homeport and its test suite need, on machines
# without systemd (CI runners, containers, fresh VMs). Each subcommand is a
# no-op when the service already answers, so it is safe to run again and
# again, and never restarts a service somebody else started.
#
#   deploy/services.sh ensure-dockerd    Docker engine on unix:///var/run/docker.sock
#   deploy/services.sh ensure-registry   plain-HTTP registry on 127.0.0.1:5000 (tests only)
#
# Logs go to /var/log/homeport/, pid files to /run/homeport/.
set -euo pipefail

LOG_DIR=/var/log/homeport
RUN_DIR=/run/homeport
DOCKER_SOCK=unix:///var/run/docker.sock
DOCKERD_PID=$RUN_DIR/dockerd.pid
DOCKERD_LOG=$LOG_DIR/dockerd.log
DOCKERD_TIMEOUT=${HOMEPORT_DOCKERD_TIMEOUT:-60}

REGISTRY_HOST=127.0.0.1
REGISTRY_PORT=5000
REGISTRY_DIR=/var/lib/homeport-test/registry
REGISTRY_CONFIG=$REGISTRY_DIR/config.yml
REGISTRY_PID=$RUN_DIR/registry.pid
REGISTRY_LOG=$LOG_DIR/registry.log
REGISTRY_TIMEOUT=${HOMEPORT_REGISTRY_TIMEOUT:-30}

say() { echo "services: $*"; }
die() { echo "services: ERROR: $*" >&2; exit 1; }

# pid_alive FILE: the pid in FILE names a running process.
pid_alive() {
    local pid
    [ -s "$1" ] || return 1
    pid=$(cat "$1" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

docker_ready() {
    timeout 20 docker --host "$DOCKER_SOCK" info >/dev/null 2>&1
}

# http_status HOST PORT PATH: prints the HTTP status code, or nothing. Uses
# bash's /dev/tcp because curl is not part of a minimal Debian.
http_status() {
    timeout 5 bash -c '
        exec 3<>"/dev/tcp/$0/$1" || exit 1
        printf "GET %s HTTP/1.0\r\nHost: %s:%s\r\n\r\n" "$2" "$0" "$1" >&3
        IFS=" " read -r _ code _ <&3 && echo "$code"
    ' "$1" "$2" "$3" 2>/dev/null || true
}

tail_log() {
    echo "---- last lines of $1 ----" >&2
    tail -n 20 "$1" >&2 || true
}

# dockerd needs cgroups; systemd mounts them, bare init systems may not.
ensure_cgroups() {
    if grep -qE '^[^ ]+ /sys/fs/cgroup(/[^ ]*)? cgroup2? ' /proc/mounts; then
        return 0
    fi
    if command -v cgroupfs-mount >/dev/null 2>&1; then
        say "mounting cgroups (cgroupfs-mount)"
        cgroupfs-mount
    else
        die "no cgroup filesystem is mounted and cgroupfs-mount is not installed"
    fi
}

ensure_dockerd() {
    if docker_ready; then
        say "dockerd already answers on $DOCKER_SOCK"
        return 0
    fi
    [ "$(id -u)" = 0 ] || die "dockerd is not running and only root can start it"
    command -v dockerd >/dev/null 2>&1 || die "dockerd is not installed (run deploy/bootstrap.sh)"
    mkdir -p "$LOG_DIR" "$RUN_DIR"

    # A daemon that is still starting (ours, or one started by hand with the
    # default pid file) must not get a twin: wait for it instead.
    local pid=""
    if pid_alive "$DOCKERD_PID"; then
        pid=$(cat "$DOCKERD_PID")
        say "dockerd (pid $pid) is running but not answering yet; waiting"
    elif pid_alive /var/run/docker.pid; then
        pid=$(cat /var/run/docker.pid)
        say "a dockerd (pid $pid, /var/run/docker.pid) is running but not answering yet; waiting"
    else
        ensure_cgroups
        say "starting dockerd (log: $DOCKERD_LOG)"
        # setsid + nohup: the daemon must outlive this script and the CI
        # step's terminal; its own pid file is removed by dockerd on exit.
        # fd 9 is the lock: the daemon must not inherit it.
        setsid nohup dockerd --host "$DOCKER_SOCK" --pidfile "$DOCKERD_PID" \
            >>"$DOCKERD_LOG" 2>&1 </dev/null 9>&- &
        pid=$!
    fi

    local deadline=$((SECONDS + DOCKERD_TIMEOUT))
    until docker_ready; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail_log "$DOCKERD_LOG"
            die "dockerd (pid $pid) exited before it answered"
        fi
        if ((SECONDS >= deadline)); then
            tail_log "$DOCKERD_LOG"
            die "dockerd did not answer on $DOCKER_SOCK within ${DOCKERD_TIMEOUT}s"
        fi
        sleep 0.2
    done
    say "dockerd ready (pid $pid)"
}

write_registry_config() {
    local tmp
    mkdir -p "$REGISTRY_DIR/data"
    tmp=$(mktemp "$REGISTRY_DIR/.config.XXXXXX")
    # Only loopback, no auth, deletes allowed so tests can retract a tag.
    cat >"$tmp" <<EOF
# Written by deploy/services.sh: the test registry of homeport. Do not edit.
version: 0.1
log:
  level: info
  fields:
    service: homeport-test-registry
storage:
  filesystem:
    rootdirectory: $REGISTRY_DIR/data
  delete:
    enabled: true
http:
  addr: $REGISTRY_HOST:$REGISTRY_PORT
  headers:
    X-Content-Type-Options: [nosniff]
EOF
    if cmp -s "$tmp" "$REGISTRY_CONFIG"; then rm -f "$tmp"; else mv "$tmp" "$REGISTRY_CONFIG"; fi
}

ensure_registry() {
    local code
    code=$(http_status "$REGISTRY_HOST" "$REGISTRY_PORT" /v2/)
    if [ "$code" = 200 ]; then
        if pid_alive "$REGISTRY_PID"; then
            say "registry already answers on $REGISTRY_HOST:$REGISTRY_PORT (pid $(cat "$REGISTRY_PID"))"
        else
            say "a registry not started by this script answers on $REGISTRY_HOST:$REGISTRY_PORT; using it"
        fi
        return 0
    fi
    if [ -n "$code" ]; then
        # Most likely Debian's own docker-registry service, which has auth.
        die "something on $REGISTRY_HOST:$REGISTRY_PORT answers /v2/ with HTTP $code; stop it (e.g. 'service docker-registry stop') so the test registry can run there"
    fi
    command -v docker-registry >/dev/null 2>&1 || die "docker-registry is not installed (run deploy/bootstrap.sh)"
    mkdir -p "$LOG_DIR" "$RUN_DIR"
    write_registry_config

    local pid
    if pid_alive "$REGISTRY_PID"; then
        pid=$(cat "$REGISTRY_PID")
        say "registry (pid $pid) is running but not answering yet; waiting"
    else
        say "starting registry on $REGISTRY_HOST:$REGISTRY_PORT (log: $REGISTRY_LOG)"
        # fd 9 is the lock: the daemon must not inherit it.
        setsid nohup docker-registry serve "$REGISTRY_CONFIG" >>"$REGISTRY_LOG" 2>&1 </dev/null 9>&- &
        pid=$!
        echo "$pid" >"$REGISTRY_PID"
    fi

    local deadline=$((SECONDS + REGISTRY_TIMEOUT))
    until [ "$(http_status "$REGISTRY_HOST" "$REGISTRY_PORT" /v2/)" = 200 ]; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$REGISTRY_PID"
            tail_log "$REGISTRY_LOG"
            die "registry (pid $pid) exited before it answered"
        fi
        if ((SECONDS >= deadline)); then
            tail_log "$REGISTRY_LOG"
            die "registry did not answer on $REGISTRY_HOST:$REGISTRY_PORT within ${REGISTRY_TIMEOUT}s"
        fi
        sleep 0.2
    done
    say "registry ready (pid $pid)"
}

# Two runs at once (a developer and a test run) must not start two daemons.
with_lock() {
    # Without root there is nothing this script could start anyway, so the
    # lock is only taken where it can be.
    if mkdir -p "$RUN_DIR" 2>/dev/null && exec 9>>"$RUN_DIR/services.lock"; then
        flock -w 120 9 || die "another deploy/services.sh run holds $RUN_DIR/services.lock"
    fi
    "$@"
}

case "${1:-}" in
    ensure-dockerd) with_lock ensure_dockerd ;;
    ensure-registry) with_lock ensure_registry ;;
    *)
        echo "usage: $0 ensure-dockerd|ensure-registry" >&2
        exit 2
        ;;
esac
