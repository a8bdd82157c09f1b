#!/usr/bin/env bash
# Refresh requirements.lock: every runtime dependency of pyproject.toml pinned, with the
# hashes of its files, for the image (Dockerfile) and the wheel check (tests/e2e).
#   scripts/lock.sh                 # keep the pins, add or drop what pyproject changed
#   scripts/lock.sh --upgrade       # move every pin to the newest allowed release
# uv runs from a throwaway venv; commit the lock with the change that needed it.
set -euo pipefail
cd "$(dirname "$0")/.."
tools="$(mktemp -d)"
trap 'rm -rf "$tools"' EXIT
python3 -m venv "$tools"
"$tools/bin/pip" install -q uv
"$tools/bin/uv" pip compile pyproject.toml --universal --python-version 3.11 \
  --generate-hashes --custom-compile-command "scripts/lock.sh" -o requirements.lock "$@"
