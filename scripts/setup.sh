#!/usr/bin/env bash
# Idempotent setup for a fresh machine: a virtualenv with clipsearch and every
# optional group the tests use. Safe to re-run; it only installs what changed.
#   scripts/setup.sh          -> local + aws + dev groups (demo and tests)
#   scripts/setup.sh demo     -> local group only (enough for the demo)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
profile=${1:-all}

if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
fi

case "$profile" in
  demo) extras="local" ;;
  *)    extras="local,aws,server,cdk,dev" ;;
esac

stamp="$VENV/.clipsearch-$profile-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "==> installing clipsearch[$extras] (first run downloads torch; a few minutes)"
  "$VENV/bin/pip" install --quiet --progress-bar off -e ".[$extras]"
  touch "$stamp"
fi
