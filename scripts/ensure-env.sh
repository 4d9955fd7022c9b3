#!/usr/bin/env bash
# Create or refresh ./.venv so that it matches pyproject.toml and requirements.lock.
# torch==2.13.0 goes in first: with it installed, nothing else can pull a CUDA build.
# Sourced by demo.sh and test.sh; re-installs only when those files change.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
python="${PYTHON:-python3}"
stamp="$venv/.attentionseg-env"
wanted="$(cat "$root/pyproject.toml" "$root/requirements.lock" | sha256sum | cut -d' ' -f1)"

if [ ! -x "$venv/bin/python" ]; then
  "$python" -c 'import sys; assert (3, 10) <= sys.version_info[:2] <= (3, 12), f"Python 3.10-3.12 needed, found {sys.version.split()[0]}"'
  echo "Creating $venv ..." >&2
  "$python" -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "Installing dependencies into $venv (torch==2.13.0 first) ..." >&2
  "$venv/bin/python" -m pip install --quiet torch==2.13.0 >&2
  "$venv/bin/python" -m pip install --quiet -r "$root/requirements.lock" >&2
  "$venv/bin/python" -m pip install --quiet --no-deps -e "$root" >&2
  echo "$wanted" > "$stamp"
fi
