#!/bin/sh
# Build the local test image roost-test/fakegame:latest without any registry.
#
# The image is a root filesystem assembled from this host: its python3.11 (binary, the shared
# libraries ldd lists, the parts of the stdlib a small server needs), busybox-static as /bin/sh
# and the usual applets (busybox's sh execs the last command of `sh -c`, so the game itself
# gets the signals tini forwards), and the demo game at /opt/roost/fakegame.py. It is loaded
# with `docker import`, so nothing is pulled. About 25 MB, built in a few seconds.
#
# Usage: tests/docker/build_image.sh [image]     (default roost-test/fakegame:latest)
# Needs: a running engine, busybox-static (installed with apt-get when missing, as root).
# The image carries a label with a digest of this script and the game; `image_digest` below
# computes it, and scripts/docker.sh rebuilds when it changes.
set -eu
cd "$(dirname "$0")/../.."
IMAGE="${1:-roost-test/fakegame:latest}"
PY=/usr/bin/python3.11
PYLIB=/usr/lib/python3.11
GAME=roost/demo/fakegame.py

image_digest() {
  cat tests/docker/build_image.sh "$GAME" | sha256sum | cut -c1-16
}
if [ "${2:-}" = "--digest" ] || [ "${1:-}" = "--digest" ]; then
  image_digest
  exit 0
fi

[ -x "$PY" ] || { echo "build_image: $PY is missing" >&2; exit 1; }
if [ ! -x /bin/busybox ] || ! /bin/busybox --list >/dev/null 2>&1; then
  echo "build_image: installing busybox-static" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null
fi
# A dynamically linked busybox would need its libraries too; the static one needs nothing.
if ldd /bin/busybox >/dev/null 2>&1; then
  echo "build_image: /bin/busybox is not static (install busybox-static)" >&2
  exit 1
fi

ROOT=$(mktemp -d /tmp/roost-image.XXXXXX)
chmod 755 "$ROOT"  # the image root: mktemp makes it 0700, which locks out non-root users
trap 'rm -rf "$ROOT"' EXIT INT TERM
mkdir -p "$ROOT/bin" "$ROOT/usr/bin" "$ROOT/usr/lib" "$ROOT/etc" "$ROOT/opt/roost" \
  "$ROOT/home/container" "$ROOT/tmp" "$ROOT/root" "$ROOT/proc" "$ROOT/sys" "$ROOT/dev"
chmod 1777 "$ROOT/tmp"

# busybox as /bin/sh and every applet it has (python's names are kept for python below).
cp /bin/busybox "$ROOT/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ -e "$ROOT/bin/$applet" ] || ln -s busybox "$ROOT/bin/$applet"
done

# The interpreter and the stdlib, without tests, GUI toolkits, build files and bytecode.
# Extension modules that only pull in big libraries (ssl/crypto, databases, curses, readline,
# kerberos via nis) are left out: a game server image would bring its own.
cp "$PY" "$ROOT/usr/bin/python3.11"
ln -s python3.11 "$ROOT/usr/bin/python3"
ln -s python3.11 "$ROOT/usr/bin/python"
tar -C /usr/lib -cf - \
  --exclude='__pycache__' --exclude='python3.11/test' --exclude='python3.11/idlelib' \
  --exclude='python3.11/tkinter' --exclude='python3.11/turtledemo' \
  --exclude='python3.11/ensurepip' --exclude='python3.11/lib2to3' \
  --exclude='python3.11/config-3.11-*' --exclude='python3.11/distutils' \
  --exclude='python3.11/pydoc_data' --exclude='python3.11/sitecustomize.py' \
  --exclude='python3.11/site-packages' --exclude='python3.11/dist-packages' \
  --exclude='*/lib-dynload/_ssl.*' --exclude='*/lib-dynload/_hashlib.*' \
  --exclude='*/lib-dynload/_dbm.*' --exclude='*/lib-dynload/_gdbm.*' \
  --exclude='*/lib-dynload/_sqlite3.*' --exclude='*/lib-dynload/readline.*' \
  --exclude='*/lib-dynload/_curses*' --exclude='*/lib-dynload/nis.*' \
  --exclude='*/lib-dynload/_crypt.*' --exclude='*/lib-dynload/_test*' \
  --exclude='*/lib-dynload/xxlimited*' --exclude='*/lib-dynload/_ctypes_test*' \
  --exclude='*/lib-dynload/_tkinter*' \
  python3.11 | tar -C "$ROOT/usr/lib" -xf -

# Shared libraries of the interpreter and of the extension modules kept, at the paths the
# dynamic loader looks them up (copied with symlinks resolved).
{
  ldd "$PY"
  for so in "$ROOT$PYLIB"/lib-dynload/*.so; do
    ldd "$so" 2>/dev/null || true
  done
} | awk '/=>/ && $3 ~ /^\// {print $3} /^[[:space:]]*\/[^ ]*ld-linux/ {print $1}' | sort -u |
while read -r lib; do
  mkdir -p "$ROOT$(dirname "$lib")"
  cp -L "$lib" "$ROOT$lib"
done

cat > "$ROOT/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
container:x:999:999:container:/home/container:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat > "$ROOT/etc/group" <<'EOF'
root:x:0:
container:x:999:
nogroup:x:65534:
EOF
cp "$GAME" "$ROOT/opt/roost/fakegame.py"

# Smoke test: the interpreter in the tree runs the game's imports.
if command -v chroot >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  chroot "$ROOT" /usr/bin/python3 -c 'import argparse, os, signal, sys, time, json' \
    || { echo "build_image: python does not run in the image tree" >&2; exit 1; }
fi

DIGEST=$(image_digest)
OLD_ID=$(docker image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
tar -C "$ROOT" -cf - . | docker import \
  --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PYTHONUNBUFFERED=1' \
  --change 'WORKDIR /home/container' \
  --change 'CMD ["/bin/sh"]' \
  --change "LABEL roost.test.image=$DIGEST" \
  - "$IMAGE" >/dev/null
if [ -n "$OLD_ID" ] && [ "$OLD_ID" != "$(docker image inspect --format '{{.Id}}' "$IMAGE")" ]; then
  docker rmi "$OLD_ID" >/dev/null 2>&1 || true  # the replaced build, unless still in use
fi
echo "build_image: built $IMAGE ($(du -sh "$ROOT" | cut -f1) uncompressed, digest $DIGEST)"
