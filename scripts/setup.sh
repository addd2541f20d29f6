#!/usr/bin/env bash
# Idempotent setup for a fresh machine: a virtualenv with clipsearch and every
# optional group the tests use. Safe to re-run; it only installs what changed.
#   scripts/setup.sh          -> every group: local, onnx, aws, server, cdk, dev (demo and tests)
#   scripts/setup.sh demo     -> local + onnx + server groups (the demo and `clipsearch serve`)
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
  demo) extras="local,onnx,server,eval" ;;
  *)    extras="local,onnx,aws,server,cdk,dev,eval" ;;
esac

stamp="$VENV/.clipsearch-$profile-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "==> installing clipsearch[$extras] (first run downloads torch; a few minutes)"
  "$VENV/bin/pip" install --quiet --progress-bar off -e ".[$extras]"
  touch "$stamp"
fi

# The browser test drives Debian's chromium (never a downloaded browser).
if [ "$profile" != "demo" ] && [ ! -x /usr/bin/chromium ]; then
  if command -v apt-get >/dev/null 2>&1; then
    as_root=""
    [ "$(id -u)" = 0 ] || as_root="sudo"
    echo "==> installing Debian's chromium for the browser test"
    $as_root apt-get update -q
    DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -q chromium
  else
    echo "==> WARNING: no apt-get; install chromium at /usr/bin/chromium or the browser test skips"
  fi
fi

# The OpenSearch test node is built from Maven Central jars: it needs a JDK 17+ and Maven.
if [ "$profile" != "demo" ] && { ! command -v java >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; }; then
  if command -v apt-get >/dev/null 2>&1; then
    as_root=""
    [ "$(id -u)" = 0 ] || as_root="sudo"
    echo "==> installing a JDK and Maven for the OpenSearch test node"
    $as_root apt-get update -q
    DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -q openjdk-17-jdk-headless maven
  else
    echo "==> WARNING: no apt-get; install Java 17+ and Maven or the OpenSearch tests skip"
  fi
fi

# The container-parity environment (tests/test_container_parity.py): the
# SageMaker container's exact torch, transformers, inference toolkit and
# multi-model-server on Python 3.12, cached in ~/.cache/clipsearch/parity-<hash
# of the pins> and rebuilt only when the pins change (first build: ~1 GB of
# downloads). It needs a Python 3.12 (pyenv or python3.12 on PATH) and the JDK
# above for the model server.
if [ "$profile" != "demo" ]; then
  "$VENV/bin/python" scripts/parity_env.py >/dev/null
fi
