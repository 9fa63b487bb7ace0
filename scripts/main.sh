#!/usr/bin/env bash
# Quick start, command 1: set up ./.venv, then embed the sample corpus with the bundled all-MiniLM-L6-v2
# and score every pooling strategy on the sample STS pairs.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$("$root/scripts/setup-env.sh" encode)"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
cd "$root"
mkdir -p out
"$venv/bin/tokenpool" embed examples/corpus.txt -o out/corpus.npy --progress
"$venv/bin/tokenpool" evaluate examples/sts-sample.tsv
