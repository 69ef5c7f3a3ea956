#!/bin/sh
# Install what roost needs into ./.venv (Debian 12, Python 3.11, root or a user with sudo-less venv).
# Usage: scripts/bootstrap.sh [extras]   e.g. "test"
set -eu
cd "$(dirname "$0")/.."
extras="${1:-}"
if ! python3 -c "import ensurepip, venv" >/dev/null 2>&1; then
  echo "bootstrap: installing python3-venv" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if [ -n "$extras" ]; then
  .venv/bin/python -m pip install -q -e ".[$extras]"
else
  .venv/bin/python -m pip install -q -e .
fi
