#!/usr/bin/env bash
# The main job end to end: publishes `reflect` for the bundled sample jobs, a real
# worker processes them against the scripted LLM, and each reflection is printed.
set -euo pipefail
source "$(dirname "$0")/_setup.sh"
exec .venv/bin/python scripts/demo.py "$@"
