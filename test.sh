#!/usr/bin/env bash
# The test suite in the project's own environment (created on first use).
# Arguments go to pytest, e.g. ./test.sh -k metrics
set -euo pipefail
root="$(cd "$(dirname "$0")" && pwd)"
source "$root/scripts/ensure-env.sh"
cd "$root"
exec "$root/.venv/bin/python" -m pytest "$@"
