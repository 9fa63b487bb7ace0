#!/usr/bin/env bash
# Quick start, command 2: set up ./.venv with every extra, then lint and run the whole test suite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$("$root/scripts/setup-env.sh" encode,parquet,plot,llama-index,ray,serve,test)"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
cd "$root"
"$venv/bin/ruff" check src tests benchmarks examples
# two pytest workers (the machines have 2 cores), a module's tests in one of them (module fixtures built once)
"$venv/bin/python" -m pytest -n "${TOKENPOOL_TEST_WORKERS:-2}" --dist loadfile "$@"
