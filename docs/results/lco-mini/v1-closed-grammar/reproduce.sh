#!/usr/bin/env bash
# Historical: this made the first, closed-grammar lco-mini-base and its lr 1e-3 adapter, whose
# results are in this folder. The shipped weights now come from ../reproduce.sh.
# Reproduces docs/results/lco-mini/ on a 2-core CPU (about 2.5 hours; stage 1 is most of it).
# Run from the repository root after `make install`; every number in README.md comes from here.
set -euo pipefail
export PATH="$PWD/.venv/bin:$PATH"
RUNS=${RUNS:-runs}

# The shipped weights predate the open-vocabulary tasks and the general text corpus, so the
# closed-grammar task mix and the in-domain corpus are named explicitly below.
CLOSED_MIX="scene=0.25,ocr=0.3,digit=0.1,speech=0.2,clip=0.15,utterance=0,words=0,scene_wide=0,clip_wide=0"

# 1. stage 1: generative pretraining of the image and audio projectors
lcoemb mini pretrain --no-reading --output "$RUNS/base" --cache-dir "$RUNS/features" --steps 1500 \
    --save-steps 100 --keep-checkpoints 0 --task-weights "$CLOSED_MIX" \
    --train-size scene=4000,ocr=3000,digit=1500,speech=1500,clip=800

# 1b. stage 1, reading: add the reading tower and train its projector alone on the OCR task
#     (image and audio projectors stay as step 1 left them) (-> lcoemb/mini/weights/base)
lcoemb mini pretrain --base "$RUNS/base" --train read \
    --task-weights scene=0,digit=0,speech=0,clip=0,ocr=1,utterance=0,words=0,scene_wide=0,clip_wide=0 \
    --train-size ocr=2000 --steps 400 --output "$RUNS/base-reading" --cache-dir "$RUNS/features"

# 2. the main job: text-only LCO training from lco-mini-base, retrieval/anisotropy/alignment
#    before and after (-> lcoemb/mini/weights/lco is this run's adapter)
lcoemb quickstart --base "$RUNS/base-reading" --output "$RUNS/quickstart" --corpus in-domain

# 3. the offline mteb benchmark, base against trained
lcoemb eval --model "$RUNS/base-reading" --benchmark offline --output "$RUNS/eval-base"
lcoemb eval --model "$RUNS/base-reading" --adapter "$RUNS/quickstart/lco/adapter" --benchmark offline \
    --output "$RUNS/eval-lco"

# 4. the embedding space per layer, base against trained
lcoemb analyze --model "$RUNS/base-reading" --compare-adapter "$RUNS/quickstart/lco/adapter" \
    --pairs offline --n 200 --output "$RUNS/space"

# 5. GRSL at mini scale: checkpoints along stage 1 (before reading) are backbones with smaller
#    generative budgets
variants=()
for step in 100 300 700 1500; do
    lcoemb mini export --checkpoint "$RUNS/base/checkpoints/step-$step" --output "$RUNS/variants/step-$step"
    variants+=("$RUNS/variants/step-$step")
done
lcoemb grsl measure --models "${variants[@]}" --output "$RUNS/grsl"
