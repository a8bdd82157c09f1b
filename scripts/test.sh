#!/usr/bin/env bash
# The whole test suite from a fresh clone: set-up, lint, types, then every test tier
# (unit, integration on the real Redis/Postgres, end to end with real celery workers).
set -euo pipefail
source "$(dirname "$0")/_setup.sh"
if [ "${SETUP_SERVICES:-1}" = "1" ]; then ensure_rabbitmq; fi
ensure_compose_client
echo "== ruff" && .venv/bin/ruff check . && .venv/bin/ruff format --check .
echo "== mypy" && .venv/bin/mypy
echo "== radon" && .venv/bin/python scripts/complexity.py
echo "== pytest" && exec .venv/bin/pytest "$@"
