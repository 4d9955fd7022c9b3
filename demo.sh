#!/usr/bin/env bash
# The main job: `attentionseg demo` in the project's own environment (created on first use).
# Arguments are passed on, e.g. ./demo.sh --out /tmp/demo
set -euo pipefail
root="$(cd "$(dirname "$0")" && pwd)"
source "$root/scripts/ensure-env.sh"
exec "$root/.venv/bin/attentionseg" demo "$@"
