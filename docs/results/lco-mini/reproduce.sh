#!/usr/bin/env bash
# Reproduces docs/results/lco-mini/ on a 2-core CPU (about 8 hours; stage 1 is a third of it).
# Run from the repository root after `make install`; every number in README.md comes from here.
set -euo pipefail
export PATH="$PWD/.venv/bin:$PATH"
RUNS=${RUNS:-runs}

# 1. stage 1: generative pretraining on the open-vocabulary task mix (the defaults of
#    `lcoemb mini pretrain`: closed-grammar scenes, OCR, digits, speech and clips plus fortunes
#    sentences spoken in 6 voices, wamerican words in 21 fonts, wide scenes and two-object
#    clips), the image, audio and reading projectors and a rank-8 LoRA on the LM
#    (-> lcoemb/mini/weights/base; --resume continues an interrupted run from its newest
#    checkpoint, and every 100-step checkpoint is kept for step 6)
lcoemb mini pretrain --output "$RUNS/base" --cache-dir "$RUNS/features" --steps 2000 \
    --save-steps 100 --keep-checkpoints 0 --lm-lora-r 8 --resume

# 2. the adapter sweep: learning rate, corpus and LoRA targets against generation kept and
#    retrieval (docs/results/lco-mini/sweep/; its general lr 1e-4 attention-only run is
#    lcoemb/mini/weights/lco, stored in bf16)
attention=q_proj,k_proj,v_proj,o_proj
for run in "1e-4 60 16 general" "2e-4 60 16 general" "1e-4 60 16 in-domain" \
    "1e-4 60 16 general 0 $attention" "2e-4 60 16 general 0 $attention"; do
    # shellcheck disable=SC2086
    python docs/results/lco-mini/sweep/run.py "$RUNS/base" "$RUNS/sweep" $run
done
python docs/results/lco-mini/sweep/table.py "$RUNS/sweep"

# 3. the quickstart on the new base (its retrieval rows equal the sweep's general lr 1e-4
#    attention-only run; it adds the anisotropy and alignment per layer, and the wall time)
lcoemb quickstart --base "$RUNS/base" --output "$RUNS/quickstart"

# 4. generation kept by the adapter, 100 items per task (README's numbers are the shipped
#    bf16 copy: `lcoemb grsl generation --model lco-mini --n 100`)
lcoemb grsl generation --model "$RUNS/base" --adapter "$RUNS/quickstart/lco/adapter" \
    --n 100 --output "$RUNS/generation"

# 5. the calibration ablation: text-only, 80/20 text with multimodal calibration, multimodal
#    only, and no training, each on the quickstart's budget (docs/results/lco-mini/ablation/)
#    (measured with LoRA on every LM Linear, the quickstart's default until the shipped adapter
#    became attention-only; drop --lora-targets for today's default)
every_linear=(q_proj k_proj v_proj o_proj gate_proj up_proj down_proj)
lcoemb mini ablation --base "$RUNS/base" --output "$RUNS/ablation" --n-generation 20 \
    --lora-targets "${every_linear[@]}"

# 6. GRSL across stage-1 budgets: the checkpoints of step 1 at 100, 200, 400, 1000 and 2000
#    steps, each trained text-only with three seeds (docs/results/lco-mini/grsl/)
variants=()
budgets=(100 200 400 1000 2000)
for step in "${budgets[@]}"; do
    lcoemb mini export --checkpoint "$RUNS/base/checkpoints/step-$step" \
        --output "$RUNS/variants/step-$step"
    variants+=("$RUNS/variants/step-$step")
done
#    (every LM Linear, as step 5)
lcoemb grsl measure --models "${variants[@]}" --budgets "${budgets[@]}" --seeds 0 1 2 \
    --lora-targets "${every_linear[@]}" --n-generation 50 --offline-size 100 \
    --output "$RUNS/grsl"
