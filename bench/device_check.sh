#!/usr/bin/env bash
# The GPU checks as one prepared run, for a session lent a GPU machine (the device tool; see README,
# "Performance"): the CUDA tests (AMP steps without host syncs, a toy run on the GPU, GPU search against the
# CPU's) and the benchmark figures of the README's performance table.
#
#   bash bench/device_check.sh prepare     # here: wheels the GPU image lacks + Multi30K text into .device/
#   bash bench/device_check.sh run         # there: run(command="bash bench/device_check.sh run",
#                                          #             carry=[".device"], timeout_s=540)
#
# The GPU image has its own python3 with torch, torchvision, typer, rich, sacrebleu, pyyaml and tqdm; the
# pure-Python packages it lacks travel as wheels. ../shared does not travel: the Multi30K text the benchmarks
# read is copied into .device/ (ignored by git) and put back beside the repository there.
set -uo pipefail
cd "$(dirname "$0")/.."
HERE=$PWD
STAGE=.device
case "${1:-}" in
prepare)
    set -e
    mkdir -p "$STAGE/whl" "$STAGE/multi30k"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$STAGE/whl" sacremoses==0.2.0 subword-nmt==0.3.8 nltk mock defusedxml
    cp -r ../shared/data/multi30k/tok "$STAGE/multi30k/"
    du -sh "$STAGE"
    ;;
run)
    OUT=${OUT:-/tmp/ikd-device-check}
    mkdir -p "$OUT"
    export PYTHONUNBUFFERED=1
    if ls "$STAGE"/whl/*.whl >/dev/null 2>&1; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            "$STAGE"/whl/*.whl || exit 1
        export PYTHONPATH=/tmp/site:$HERE
    else
        export PYTHONPATH=$HERE
    fi
    if [ -d "$STAGE/multi30k/tok" ] && [ ! -d ../shared/data/multi30k/tok ]; then
        mkdir -p ../shared/data/multi30k && cp -r "$STAGE/multi30k/tok" ../shared/data/multi30k/
    fi
    status=0
    step() {  # step LOG SECONDS COMMAND...: run, keep the output, remember a failure (pipefail: the command's)
        local log=$1 seconds=$2
        shift 2
        timeout "$seconds" "$@" 2>&1 | tee -a "$OUT/$log" || { echo "FAILED ($?): $*" | tee -a "$OUT/$log"; status=1; }
    }
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 | tee "$OUT/gpu.txt"
    step gpu.txt 30 python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
    # budgets add up to 450 s, inside the suggested timeout_s=540 with the wheel install
    step tests.log 200 python3 -m pytest -q -p no:cacheprovider -o addopts="" tests/test_cuda.py
    step train_step.log 100 python3 bench/train_step.py --device cuda --sync-debug
    step train_step.log 50 python3 bench/train_step.py --device cuda --models text --max-tokens 8192
    step translate_speed.log 100 python3 bench/translate_speed.py --device cuda
    exit $status
    ;;
*)
    echo "usage: bash bench/device_check.sh prepare|run" >&2
    exit 2
    ;;
esac
