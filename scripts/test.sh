#!/bin/sh
# The README's second command (and what CI runs): install everything the tests need, run them all.
set -eu
cd "$(dirname "$0")/.."
sh scripts/bootstrap.sh test
need=""
[ -x /usr/games/openttd ] || need="$need openttd openttd-opengfx"
command -v redis-server >/dev/null 2>&1 || need="$need redis-server"
command -v node >/dev/null 2>&1 || need="$need nodejs"
command -v npm >/dev/null 2>&1 || need="$need npm"
command -v unshare >/dev/null 2>&1 || need="$need util-linux"
command -v ip >/dev/null 2>&1 || need="$need iproute2"
command -v pigz >/dev/null 2>&1 || need="$need pigz"
if [ -n "$need" ]; then
  echo "test: installing$need" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
fi
if [ ! -d tests/node/node_modules/ws ]; then
  (cd tests/node && npm install --silent --no-audit --no-fund >/dev/null)
fi
# A Docker engine (vfs storage driver) and the locally built test image; torn down afterwards.
# If no engine can run here, the Docker tests skip and say why.
sh scripts/docker.sh ensure || echo "test: no Docker engine; Docker runtime tests will be skipped" >&2
status=0
.venv/bin/python -m pytest -n 2 -q "$@" || status=$?
sh scripts/docker.sh teardown || true
exit $status
