#!/usr/bin/env bash
# Quick start, command 1: set up ./.venv, then run the main job on the bundled all-MiniLM-L6-v2.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$("$root/scripts/setup-env.sh" encode)"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
cd "$root"
"$venv/bin/python" examples/demo.py
