#!/bin/sh
# The README's first command: install roost and start a node with a demo server.
set -eu
cd "$(dirname "$0")/.."
sh scripts/bootstrap.sh
exec .venv/bin/roost up "$@"
