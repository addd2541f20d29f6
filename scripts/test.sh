#!/usr/bin/env bash
# Runs lint and the whole test suite. Services the tests need (the OpenSearch
# node) are started by pytest fixtures themselves, so this stays one command.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
