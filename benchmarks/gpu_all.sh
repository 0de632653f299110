#!/usr/bin/env bash
# The GPU benchmarks in one go, for the moment a GPU is at hand (issue #19): gpu_train_step.py
# (MFU of a LoRA step on the 3B-shaped thinker), then gpu_encode.py (items/s against mteb's
# wrapper), each under its own `timeout`, in under 9 minutes together. Run from anywhere:
#
#   bash benchmarks/gpu_all.sh           # one H100/H200
#   bash benchmarks/gpu_all.sh --mfu     # train steps only: where the MFU goes (the default
#                                        # step, LoRA in float32 as before, a profile, and
#                                        # batches without gradient checkpointing)
#   bash benchmarks/gpu_all.sh --tiny    # smoke run on the CPU: tiny models, about a minute
#                                        # (tests/test_benchmarks.py runs it in the suite)
#
# Logs go to $OUT (default ./gpu-out): env.txt, gpu_train_step.log, gpu_encode.log,
# gpu_encode.json (with --mfu: gpu_train_step.b256.log, .b64-nockpt.log, .b256-lora-float32.log,
# .profile.{log,txt}, .b96-nockpt.log). --mfu keeps its random checkpoint in $MODEL_DIR (outside
# $OUT, ~6 GB) so that its runs write it once.
# The package needs no install: the repo root goes on PYTHONPATH.
#
# What the machine lacks travels as wheels in .whl/ at the repo root ($WHEELS; ignored by git),
# installed with --target into $SITE, which goes first on PYTHONPATH. For a CUDA image with
# torch, transformers < 5.24 and no `eval` extra (26 MB, Python 3.12), made here with
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
#     transformers==5.24.0 peft==0.21.2 mteb==2.26.24 datasets==5.2.0 dill==0.4.1 \
#     multiprocess==0.70.19 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 \
#     typing-inspection==0.4.5 typing-extensions==4.16.0 pytrec-eval-terrier==0.5.11 \
#     soundfile==0.14.0 cffi==2.1.1 pycparser==3.12
# (lcoemb needs the thinker layout of transformers 5.24: `model.model.language_model`).
# Modules that lcoemb or mteb import at top level but these benchmarks never call (PyAV,
# CTranslate2, polars: 30-170 MB each) get a stand-in where they are missing; using one raises
# ImportError, so libraries that probe for them (torchvision's video io) see them as absent.
set -u -o pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
OUT=${OUT:-./gpu-out}
WHEELS=${WHEELS:-.whl}
SITE=${SITE:-/tmp/lcoemb-site}
STUBS=${STUBS:-/tmp/lcoemb-stubs}
MODEL_DIR=${MODEL_DIR:-/tmp/lcoemb-gpu-model}
TRAIN_TIMEOUT=${TRAIN_TIMEOUT:-240}
ENCODE_TIMEOUT=${ENCODE_TIMEOUT:-240}
MFU_TIMEOUT=${MFU_TIMEOUT:-150}  # each --mfu run
FIRST_TIMEOUT=${FIRST_TIMEOUT:-240}  # the first --mfu run, which also writes the checkpoint
ARGS=()
MFU=0
# --mfu: the default batch (with gradient checkpointing), then the batches run without it. By
# the saved activations measured on CPU (about 75 KiB per token and layer in bf16 without
# checkpointing, 36 layers, 157 tokens an item), 64 triplets need about 80 GiB and 96 about
# 120 of the H200's 139; 132 (the reference's share of its global batch on 8 GPUs) would not fit.
BATCH=256
NOCKPT=(64 96)
for arg in "$@"; do
    case "$arg" in
    --tiny) ARGS=(--tiny --device cpu) BATCH=8 NOCKPT=(4 8) MODEL_DIR="$MODEL_DIR-tiny" ;;
    --mfu) MFU=1 ;;
    *) echo "unknown argument $arg (--tiny, --mfu)" >&2; exit 2 ;;
    esac
done
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false TQDM_DISABLE=1

install() {
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "$@"
}
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    # all at once; if that fails (one wheel that does not fit), one by one, so the rest install
    install "$WHEELS"/*.whl || for wheel in "$WHEELS"/*.whl; do
        install "$wheel" || echo "WARNING: $wheel did not install"
    done
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
for module in av ctranslate2 polars; do
    if ! "$PY" -c "import $module" 2>/dev/null; then
        mkdir -p "$STUBS/$module"
        printf '%s\n' \
            '"""Stand-in from benchmarks/gpu_all.sh: not installed here, never called."""' \
            '' \
            'def __getattr__(name):  # ImportError: callers that probe it see it missing' \
            '    if name.startswith("__"):' \
            '        raise AttributeError(name)' \
            '    raise ImportError(f"{__name__} is not installed (a stand-in)")' \
            >"$STUBS/$module/__init__.py"
        echo "stand-in for $module"
    fi
done
export PYTHONPATH="$PWD:${PYTHONPATH:+$PYTHONPATH:}$STUBS"

{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
    "$PY" - <<'EOF'
import importlib.metadata as md
import sys

print(sys.version.split()[0], sys.executable)
for name in ("torch", "transformers", "peft", "accelerate", "tokenizers", "huggingface-hub",
             "numpy", "pyarrow", "pandas", "fsspec", "datasets", "mteb", "pydantic",
             "sentence-transformers", "flash-attn"):
    try:
        print(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name} -")
import lcoemb.encoder, lcoemb.synthetic, lcoemb.training.trainer  # noqa: E401,F401
print("lcoemb imports")
EOF
} 2>&1 | tee "$OUT/env.txt"

status=0
step() {  # step NAME ARGS...: one gpu_train_step.py run under its timeout, logged to $OUT
    local name=$1 limit=$MFU_TIMEOUT
    shift
    [ -f "$MODEL_DIR/config.json" ] || limit=$FIRST_TIMEOUT
    echo "== gpu_train_step.py $* (timeout ${limit} s)"
    timeout -k 10 "$limit" "$PY" benchmarks/gpu_train_step.py ${ARGS[@]+"${ARGS[@]}"} \
        --model-dir "$MODEL_DIR" --steps 5 --warmup 2 "$@" 2>&1 |
        tee "$OUT/gpu_train_step.$name.log" || status=$?
}
if [ "$MFU" = 1 ]; then
    # where the MFU goes (issue #19), most telling first in case time runs out: the default
    # step (LoRA under bf16 autocast); a batch without gradient checkpointing, whose recompute
    # is a third of what the default step executes; the default step with LoRA in float32 as
    # the first GPU run had it (23.3 % MFU), side by side; the default step profiled; a larger
    # batch without checkpointing, which may not fit
    step "b$BATCH" --batch-size "$BATCH"
    step "b${NOCKPT[0]}-nockpt" --batch-size "${NOCKPT[0]}" --no-gradient-checkpointing
    step "b$BATCH-lora-float32" --batch-size "$BATCH" --lora-float32
    step profile --batch-size "$BATCH" --steps 3 --warmup 1 \
        --profile "$OUT/gpu_train_step.profile.txt"
    step "b${NOCKPT[1]}-nockpt" --batch-size "${NOCKPT[1]}" --no-gradient-checkpointing
    exit "$status"
fi
echo "== gpu_train_step.py (timeout ${TRAIN_TIMEOUT} s)"
timeout -k 10 "$TRAIN_TIMEOUT" "$PY" benchmarks/gpu_train_step.py ${ARGS[@]+"${ARGS[@]}"} 2>&1 |
    tee "$OUT/gpu_train_step.log" || status=$?
echo "== gpu_encode.py (timeout ${ENCODE_TIMEOUT} s)"
timeout -k 10 "$ENCODE_TIMEOUT" "$PY" benchmarks/gpu_encode.py ${ARGS[@]+"${ARGS[@]}"} \
    --budget-s $((ENCODE_TIMEOUT - 45)) --json "$OUT/gpu_encode.json" 2>&1 |
    tee "$OUT/gpu_encode.log" || status=$?
exit "$status"
