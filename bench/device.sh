#!/usr/bin/env bash
# The GPU checks of the engine, for the lent device machine, which has torch but other
# versions of transformers and no pydantic. Two steps:
#
#   bash bench/device.sh wheels         # here: fetch the pinned pure/py3.12 wheels into .whl/ (git-ignored)
#   bash bench/device.sh tests|bench    # there (device run, carry [".whl"]): logs under $OUT
#
# "tests" runs tests_cuda (graph replay == eager, float64 == references, no sync in a step);
# "bench" runs bench/rollout.py on the Qwen2.5-0.5B and -7B shapes at batch 1, 16, 64, 256.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
wheels)
    rm -rf .whl && mkdir -p .whl .git/info
    grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude
    # transformers as pinned in pyproject.toml and what it needs beyond the device's image; pydantic for dail.config.
    for pkg in transformers==5.23.0 huggingface_hub==2.4.0 tokenizers==0.23.3 httpx2==2.16.2 httpcore2==2.16.2 \
               truststore pydantic==2.14.3 pydantic_core==2.50.4 annotated-types typing-inspection; do
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            -d .whl "$pkg"
    done
    du -sh .whl ;;
tests|bench)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
    out="${OUT:-/tmp/out}" && mkdir -p "$out"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
    python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
        | tee -a "$out/gpu.txt"
    if [ "$1" = tests ]; then
        python3 -m pytest -q -p no:cacheprovider tests_cuda 2>&1 | tee "$out/tests_cuda.log"
    else
        for shape in qwen2.5-0.5b qwen2.5-7b; do
            python3 bench/rollout.py --shape "$shape" --device cuda --batch-sizes 1,16,64,256 --new-tokens 64 \
                --repeats 3 $([ "$shape" = qwen2.5-7b ] && echo --profile) 2>&1 | tee "$out/rollout-$shape.log"
        done
    fi ;;
*)
    echo "usage: bash bench/device.sh wheels|tests|bench" >&2; exit 2 ;;
esac
