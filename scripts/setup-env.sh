#!/usr/bin/env bash
# Create (or reuse) ./.venv and install tokenpool with the extras named in $1 (default: encode).
# torch is pinned to 2.13.0: its CPU wheel is what these machines carry; an unpinned torch pulls a CUDA build.
# A stamp file skips the install when pyproject.toml and the extras have not changed.
set -euo pipefail
extras="${1:-encode}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${TOKENPOOL_VENV:-$root/.venv}"
py="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv"
fi
stamp="$venv/.tokenpool-stamp"
want="$(sha256sum "$root/pyproject.toml" | cut -c1-16) $extras"
if [ ! -f "$stamp" ] || ! grep -qxF "$want" "$stamp"; then
  "$venv/bin/python" -m pip install -q --upgrade pip >&2
  "$venv/bin/python" -m pip install -q "torch==2.13.0" -e "$root[$extras]" >&2
  echo "$want" >> "$stamp"
fi
echo "$venv"
