#!/usr/bin/env bash
# The GPU checks as one prepared run (see README, "Performance"): the CUDA tests, the training-step figures
# with their MFU (full IKD, text-only, a plain ResNet-50 as the yardstick), torch.profiler tables of one IKD
# training step and one decoder step, and the decoding speed. Every step has a time budget, enforced with
# `timeout`, and the whole run a deadline (DEVICE_CHECK_SECONDS, default 400 s): the run ends inside 7 minutes
# whatever a step does, so that a second run still fits a 15-minute lease.
#
#   bash bench/device_check.sh plan                  # the step list and budgets
#   bash bench/device_check.sh prepare               # here: the wheels the GPU image lacks + Multi30K text
#                                                    # into .device/ (ignored by git; carried to the GPU)
#   bash bench/device_check.sh run [STEP,STEP...]    # there, e.g. with the device machine's
#                                                    #   run(command="bash bench/device_check.sh run",
#                                                    #       carry=[".device"], timeout_s=440)
#   PYTHON=.venv/bin/python bash bench/device_check.sh dry    # CPU, tiny sizes: the plumbing (or DEVICE_CHECK_DRY=1)
#
# Results go to $OUT (default /tmp/ikd-device-check, /tmp/ikd-device-check-dry in dry mode), each file written
# when its step finishes, so a step that runs out of time loses only its own figures. At most 8 files:
#   env.txt                    the plan, nvidia-smi, lscpu, python/torch/CUDA versions
#   device_check.log           everything the steps print
#   steps.json                 per step: budget, time limit given, seconds taken, exit status (rewritten per step)
#   tests.xml                  tests/test_cuda.py as JUnit XML
#   train_step.json            bench/train_step.py --models full,text,resnet50 --sync-debug (MFU fields: `mfu`)
#   train_step_text8192.json   the text-only step at 8,192 tokens per batch
#   profile.txt                bench/gpu_profile.py: one IKD training step, one decoder step
#   translate_speed.json       bench/translate_speed.py: beam 5 and greedy, outputs as long as the source
#
# The GPU image has its own python3 with torch, torchvision, pytest, typer, rich, sacrebleu, pyyaml and tqdm;
# the pure-Python packages it lacks travel as wheels. ../shared does not travel: the Multi30K text the
# benchmarks read is copied into .device/ and put back beside the repository there.
set -uo pipefail
cd "$(dirname "$0")/.."
HERE=$PWD
STAGE=.device
MODE=${1:-}
if [ "${DEVICE_CHECK_DRY:-0}" = 1 ] && [ "$MODE" = run ]; then MODE=dry; fi
ONLY=${2:-}
TOTAL=${DEVICE_CHECK_SECONDS:-400}

# name|budget in seconds|what it runs. The budgets add up to at most TOTAL (checked by tests).
STEPS=(
    "env|20|nvidia-smi, lscpu, python, torch and CUDA versions"
    "wheels|15|pip-install the wheels of .device/whl (run mode only)"
    "tests|150|pytest tests/test_cuda.py (AMP, compiled and ResNet-50 steps under sync-debug 'error', toy run, GPU search)"
    "train_step|100|bench/train_step.py --models full,text,resnet50 --sync-debug: throughput, FLOPs, MFU"
    "text8192|30|bench/train_step.py --models text --max-tokens 8192 --sync-debug"
    "profile|35|bench/gpu_profile.py: torch.profiler tables of one IKD training step and one decoder step"
    "translate|45|bench/translate_speed.py: beams 5 and 1, outputs capped at the source length"
)
# DEVICE_CHECK_BUDGETS="step=seconds,..." changes budgets (e.g. more time for one step in a rerun of it).
budget_of() {  # budget_of STEP DEFAULT
    local item
    local budgets=${DEVICE_CHECK_BUDGETS:-}
    for item in ${budgets//,/ }; do
        if [ "${item%%=*}" = "$1" ]; then
            case ${item#*=} in
            '' | *[!0-9]*) echo "DEVICE_CHECK_BUDGETS: $item is not step=seconds" >&2 ;;
            *) echo "${item#*=}" && return ;;
            esac
        fi
    done
    echo "$2"
}

plan() {
    local sum=0 entry name budget what
    printf '%-11s %8s  %s\n' step budget what
    for entry in "${STEPS[@]}"; do
        IFS='|' read -r name budget what <<<"$entry"
        budget=$(budget_of "$name" "$budget")
        printf '%-11s %7ss  %s\n' "$name" "$budget" "$what"
        sum=$((sum + budget))
    done
    printf '%-11s %7ss  (deadline for the whole run: %ss)\n' total "$sum" "$TOTAL"
}

case "$MODE" in
plan)
    plan
    exit 0
    ;;
prepare)
    set -e
    mkdir -p "$STAGE/whl" "$STAGE/multi30k"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$STAGE/whl" sacremoses==0.2.0 subword-nmt==0.3.8 nltk mock defusedxml
    cp -r ../shared/data/multi30k/tok "$STAGE/multi30k/"
    du -sh "$STAGE"
    exit 0
    ;;
run | dry) ;;
*)
    echo "usage: bash bench/device_check.sh plan|prepare|run|dry [STEP,STEP...]" >&2
    exit 2
    ;;
esac

export PYTHONUNBUFFERED=1
if [ "$MODE" = dry ]; then
    OUT=${OUT:-/tmp/ikd-device-check-dry}
    PY=${PYTHON:-python3}
    DEV=cpu
else
    OUT=${OUT:-/tmp/ikd-device-check}
    PY=${PYTHON:-python3}
    DEV=cuda
fi
mkdir -p "$OUT"
LOG=$OUT/device_check.log
rm -f "$OUT"/{env.txt,device_check.log,steps.json,tests.xml,train_step.json,train_step_text8192.json,profile.txt,translate_speed.json}
export PYTHONPATH=$HERE${PYTHONPATH:+:$PYTHONPATH}

# Tiny sizes for the dry run: the same code paths on the CPU in seconds.
TINY=(--set vision.backbone=resnet18 --set model.d_model=32 --set model.ffn=64 --set model.heads=2
    --set model.encoder_layers=1 --set model.decoder_layers=1 --image-size 32 --threads 1)

command_of() {  # command_of STEP: the step's command line in CMD
    local dry=0
    [ "$MODE" = dry ] && dry=1
    case "$1" in
    env) CMD=(env_info) ;;
    wheels) CMD=(install_wheels) ;;
    tests)
        CMD=("$PY" -m pytest -v -p no:cacheprovider -o addopts= -rfEs --durations=10 --junitxml="$OUT/tests.xml"
            tests/test_cuda.py)
        ;;
    train_step)
        CMD=("$PY" bench/train_step.py --device "$DEV" --models full,text,resnet50 --json "$OUT/train_step.json")
        if [ $dry = 1 ]; then
            CMD+=("${TINY[@]}" --steps 3 --warmup 1 --max-tokens 128 --matmul-size 128 --resnet-batch 2
                --resnet-size 32 --resnet-steps 2 --resnet-warmup 1 --peak-tflops 1)
        else
            CMD+=(--sync-debug)
        fi
        ;;
    text8192)
        CMD=("$PY" bench/train_step.py --device "$DEV" --models text --json "$OUT/train_step_text8192.json")
        if [ $dry = 1 ]; then
            CMD+=("${TINY[@]}" --max-tokens 512 --steps 2 --warmup 1 --matmul-size 128 --peak-tflops 1)
        else
            CMD+=(--max-tokens 8192 --sync-debug)
        fi
        ;;
    profile)
        CMD=("$PY" bench/gpu_profile.py --device "$DEV" --out "$OUT/profile.txt")
        if [ $dry = 1 ]; then
            CMD+=("${TINY[@]}" --max-tokens 128 --warmup 1 --decode-batch 4 --beam 2 --prefix 2 --rows 10)
        fi
        ;;
    translate)
        CMD=("$PY" bench/translate_speed.py --device "$DEV" --json "$OUT/translate_speed.json")
        if [ $dry = 1 ]; then
            CMD+=(--sentences 16 --batch-size 8 --beams 2,1 --caps srclen --check-unbatched 2)
        else
            CMD+=(--beams 5,1 --caps srclen --check-unbatched 20)
        fi
        ;;
    *) return 1 ;;
    esac
}

env_info() {
    {
        echo "# bench/device_check.sh $MODE, $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
        echo "$PLAN"
        echo
        if command -v nvidia-smi >/dev/null; then
            nvidia-smi
            nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,power.limit \
                --format=csv
        else
            echo "nvidia-smi: not on this machine"
        fi
        echo
        lscpu
        echo
        "$PY" -c "import platform, torch, torchvision
print('python', platform.python_version(), '| torch', torch.__version__, '| torchvision', torchvision.__version__,
      '| CUDA', torch.version.cuda, '| cuDNN', torch.backends.cudnn.version())
print('GPU:', torch.cuda.get_device_name() if torch.cuda.is_available() else 'none',
      '| capability', torch.cuda.get_device_capability() if torch.cuda.is_available() else None)"
    } >"$OUT/env.txt" 2>&1
    local rc=$?
    cat "$OUT/env.txt"
    return $rc
}

install_wheels() {
    if [ "$MODE" = dry ]; then
        echo "dry mode: no wheels installed"
    elif ls "$STAGE"/whl/*.whl >/dev/null 2>&1; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            "$STAGE"/whl/*.whl || return 1
    else
        echo "no wheels in $STAGE/whl (bash bench/device_check.sh prepare makes them)"
    fi
    if [ -d "$STAGE/multi30k/tok" ] && [ ! -d ../shared/data/multi30k/tok ]; then
        mkdir -p ../shared/data/multi30k && cp -r "$STAGE/multi30k/tok" ../shared/data/multi30k/
    fi
}
if [ -n "$ONLY" ]; then  # the steps asked for must exist
    known=",$(for entry in "${STEPS[@]}"; do printf '%s,' "${entry%%|*}"; done)"
    for item in ${ONLY//,/ }; do
        if [[ "$known" != *",$item,"* ]]; then
            echo "unknown step '$item' (steps: ${known:1:${#known}-2})" >&2
            exit 2
        fi
    done
fi
PLAN=$(plan)
export -f env_info install_wheels
export MODE OUT PY STAGE TOTAL PLAN
[ -d "$STAGE/whl" ] && [ "$MODE" = run ] && export PYTHONPATH=/tmp/site:$PYTHONPATH

RECORDS=()
write_steps() {
    local IFS=,
    printf '{"mode": "%s", "deadline_s": %s, "elapsed_s": %s, "steps": [%s]}\n' \
        "$MODE" "$TOTAL" "$SECONDS" "${RECORDS[*]}" >"$OUT/steps.json"
}

status=0
SECONDS=0
echo "$PLAN" | tee -a "$LOG"
for entry in "${STEPS[@]}"; do
    IFS='|' read -r name budget _ <<<"$entry"
    budget=$(budget_of "$name" "$budget")
    if [ -n "$ONLY" ] && [ "$name" != env ] && [ "$name" != wheels ] && [[ ",$ONLY," != *",$name,"* ]]; then
        continue
    fi
    left=$((TOTAL - SECONDS - 5))  # 5 s for the kill grace and the last writes
    limit=$((budget < left ? budget : left))
    if [ "$left" -lt 5 ] || [ "$limit" -lt 1 ]; then
        echo "=== $name: skipped, ${left}s left of the ${TOTAL}s deadline" | tee -a "$LOG"
        RECORDS+=("{\"name\": \"$name\", \"budget_s\": $budget, \"limit_s\": 0, \"seconds\": 0, \"rc\": null, \"status\": \"skipped\"}")
        status=1
        write_steps
        continue
    fi
    command_of "$name"
    echo "=== $name: budget ${budget}s, limit ${limit}s, at ${SECONDS}s: ${CMD[*]}" | tee -a "$LOG"
    start=$SECONDS
    if [ "$(type -t "${CMD[0]}")" = function ]; then
        timeout -k 3 "$limit" bash -c "${CMD[*]}" 2>&1 | tee -a "$LOG"
    else
        timeout -k 3 "$limit" "${CMD[@]}" 2>&1 | tee -a "$LOG"
    fi
    rc=${PIPESTATUS[0]}
    took=$((SECONDS - start))
    case $rc in
    0) state=ok ;;
    124 | 137) state=timeout ;;
    *) state=failed ;;
    esac
    [ "$rc" = 0 ] || status=1
    echo "=== $name: $state (exit $rc) after ${took}s" | tee -a "$LOG"
    RECORDS+=("{\"name\": \"$name\", \"budget_s\": $budget, \"limit_s\": $limit, \"seconds\": $took, \"rc\": $rc, \"status\": \"$state\"}")
    write_steps
done
rm -f "$OUT"/*.tmp
echo "=== done in ${SECONDS}s of ${TOTAL}s; results in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')" | tee -a "$LOG"
exit $status
