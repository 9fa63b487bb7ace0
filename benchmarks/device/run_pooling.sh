#!/usr/bin/env bash
# On a lent GPU machine: the CUDA pooling tests, then the CUDA pooling benchmark (issue 19, item 4). Writes
# logs, tables and JSON to $OUT. The image has torch and numpy but not array-api-compat: carry it as a plain
# copy of the pure-Python package (prepared on this side, in an ignored folder):
#     mkdir -p .device/site && cp -r "$(python -c 'import array_api_compat, os; print(os.path.dirname(array_api_compat.__file__))')" .device/site/
#     grep -qx '/.device/' .git/info/exclude || echo /.device/ >> .git/info/exclude
# then: run(command="bash benchmarks/device/run_pooling.sh", carry=[".device/site"], timeout_s=540)
set -uo pipefail
py="${PY:-python3}"
out="${OUT:-/tmp/out}"; mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src:$PWD/.device/site${PYTHONPATH:+:$PYTHONPATH}"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  "$py" -c 'import torch, numpy, array_api_compat; print("torch", torch.__version__, "numpy", numpy.__version__, "array-api-compat", array_api_compat.__version__)'
} 2>&1 | tee "$out/device.txt"
timeout 150 "$py" -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$out/cuda_tests.log" | tail -15
timeout 300 "$py" benchmarks/device/bench_pooling_cuda.py --out "$out" "$@" 2>&1 | tee "$out/pooling_cuda.log" | tail -60
