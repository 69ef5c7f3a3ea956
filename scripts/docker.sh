#!/bin/sh
# The container engine for roost's Docker runtime tests.
#
#   sh scripts/docker.sh ensure     install docker.io if missing, start dockerd (vfs storage
#                                   driver) if no engine answers, build the local test image
#                                   if it is missing or out of date; idempotent
#   sh scripts/docker.sh teardown   remove the containers roost's tests labelled, and stop
#                                   dockerd only if `ensure` started it
#   sh scripts/docker.sh status     say what is there
#
# No registry is needed: the test image is built with `docker import` (tests/docker/).
# Concurrent calls (e.g. one per pytest worker) are serialised with a lock.
set -eu
cd "$(dirname "$0")/.."

IMAGE="roost-test/fakegame:latest"
TEST_LABEL="roost.test=1"
RUN_DIR="${ROOST_DOCKER_RUN_DIR:-/run/roost-test-docker}"
PID_FILE="$RUN_DIR/dockerd.pid"   # present only when `ensure` started dockerd
LOG_FILE="${ROOST_DOCKERD_LOG:-/var/log/roost-test-dockerd.log}"
LOCK_FILE="$RUN_DIR/lock"
START_WAIT_S=60

say() { echo "docker.sh: $*" >&2; }

docker_cli() {
  # The engine's own client first: a newer client on PATH can be fine too.
  if [ -x /usr/bin/docker ]; then /usr/bin/docker "$@"; else docker "$@"; fi
}

engine_answers() {
  docker_cli version --format '{{.Server.Version}}' >/dev/null 2>&1
}

with_lock() {
  mkdir -p "$RUN_DIR"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$LOCK_FILE"
    flock -w 300 9 || { say "could not take $LOCK_FILE"; exit 1; }
  fi
}

ensure_installed() {
  if command -v dockerd >/dev/null 2>&1 && \
      { [ -x /usr/bin/docker ] || command -v docker >/dev/null 2>&1; }; then
    return 0
  fi
  if [ "$(id -u)" != 0 ]; then
    say "docker.io is not installed and installing it needs root"; exit 1
  fi
  say "installing docker.io"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    docker.io busybox-static >/dev/null
  say "installed docker.io ($(dockerd --version 2>/dev/null || echo '?'))"
}

ensure_engine() {
  if engine_answers; then
    say "engine already running ($(docker_cli version --format '{{.Server.Version}}'))"
    return 0
  fi
  if [ "$(id -u)" != 0 ]; then
    say "no engine answers and starting dockerd needs root"; exit 1
  fi
  if [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
    say "dockerd (pid $(cat "$PID_FILE")) runs but does not answer yet"
  else
    # vfs: the storage driver that works everywhere (no overlay mounts inside a container).
    # 9>&-: dockerd must not inherit (and hold forever) the lock taken above.
    nohup dockerd --storage-driver vfs >>"$LOG_FILE" 2>&1 </dev/null 9>&- &
    echo $! >"$PID_FILE"
    say "started dockerd --storage-driver vfs (pid $!, log $LOG_FILE)"
  fi
  i=0
  while ! engine_answers; do
    i=$((i + 1))
    if [ "$i" -gt $((START_WAIT_S * 4)) ] || ! kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
      say "dockerd did not come up; last log lines:"
      tail -n 15 "$LOG_FILE" >&2 || true
      rm -f "$PID_FILE"
      exit 1
    fi
    sleep 0.25
  done
  say "engine is up ($(docker_cli version --format '{{.Server.Version}}'))"
}

ensure_image() {
  want=$(sh tests/docker/build_image.sh --digest)
  have=$(docker_cli image inspect --format '{{ index .Config.Labels "roost.test.image" }}' \
    "$IMAGE" 2>/dev/null || true)
  if [ "$have" = "$want" ]; then
    say "image $IMAGE is up to date"
    return 0
  fi
  if [ -n "$have" ]; then say "image $IMAGE is out of date, rebuilding"; fi
  sh tests/docker/build_image.sh "$IMAGE"
}

remove_test_containers() {
  ids=$(docker_cli ps -aq --filter "label=$TEST_LABEL" 2>/dev/null || true)
  if [ -n "$ids" ]; then
    # shellcheck disable=SC2086
    docker_cli rm -f -v $ids >/dev/null
    say "removed $(echo "$ids" | wc -l) test container(s)"
  else
    say "no test containers to remove"
  fi
}

stop_our_dockerd() {
  if [ ! -f "$PID_FILE" ]; then
    say "dockerd was not started by ensure: left running"
    return 0
  fi
  pid=$(cat "$PID_FILE")
  if [ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" = "dockerd" ]; then
    kill -TERM "$pid"
    i=0
    while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 120 ]; do
      i=$((i + 1)); sleep 0.25
    done
    if kill -0 "$pid" 2>/dev/null; then
      say "dockerd (pid $pid) did not stop in 30 s"; exit 1
    fi
    say "stopped dockerd (pid $pid)"
  else
    say "dockerd (pid $pid) is already gone"
  fi
  rm -f "$PID_FILE"
}

case "${1:-}" in
  ensure)
    with_lock
    ensure_installed
    ensure_engine
    ensure_image
    ;;
  teardown)
    with_lock
    if engine_answers; then remove_test_containers; fi
    stop_our_dockerd
    ;;
  status)
    if engine_answers; then
      say "engine $(docker_cli version --format '{{.Server.Version}}') answers"
      docker_cli image inspect --format "image $IMAGE {{.Id}} {{.Size}} bytes" "$IMAGE" 2>/dev/null \
        || say "image $IMAGE missing"
      say "$(docker_cli ps -aq --filter "label=$TEST_LABEL" | wc -l) test container(s)"
    else
      say "no engine answers"
    fi
    [ -f "$PID_FILE" ] && say "dockerd pid $(cat "$PID_FILE") was started by ensure" || true
    ;;
  *)
    echo "usage: sh scripts/docker.sh ensure|teardown|status" >&2
    exit 2
    ;;
esac
