"""Training-step throughput and MFU of ``lcoemb train`` on a Qwen2.5-Omni-3B-sized thinker, one GPU.

What it measures
----------------
``lcoemb.training.train`` (the loop behind ``lcoemb train``: GradCache, InfoNCE over the batch's
positives and hard negatives, LoRA on every language-model Linear, gradient checkpointing, bf16
weights) on a randomly initialised Qwen2.5-Omni thinker whose language model has Qwen2.5-Omni-3B's
shape: 36 layers, width 2048, 16 query / 2 key-value heads, MLP 11008 (about 2.8 B non-embedding
parameters). The vision and audio towers are one block each (text-only training never runs them)
and the vocabulary is the test tokenizer's, so the checkpoint is written and loaded in well under
a minute. Steps after ``--warmup`` are timed from the trainer's ``log.jsonl``.

FLOPs
-----
With ``P`` the decoder's non-embedding parameters, ``n`` its layers, ``d`` its width and ``L`` an
item's real tokens, one forward pass costs ``F = 2*P*L + 4*n*d*L**2`` (PaLM's convention: QK^T
and AV counted densely). Per item and step the script reports:

* **MFU** = ``2F`` per item (the forward, plus a backward that needs input gradients only,
  because the base weights are frozen) over the GPU's dense bf16 peak. This is the useful work.
  LoRA's own FLOPs are not counted: at r=64 on every Linear they are about 4 % of ``F`` (the
  script prints the share), and 3 times that per step with their weight gradients.
* **MFU, full-training convention** = ``3F`` (the ``6*N*tokens`` rule that counts weight
  gradients too), for comparison with published full fine-tuning numbers.
* **HFU** = what the GPU actually executes: ``F`` for GradCache's no-grad pass when the local
  batch spans several chunks, ``F`` for the graph forward, ``F`` for checkpointing's recompute,
  ``F`` for the backward.

By default the whole local batch is one GradCache chunk (``--mini-batch-size`` = 3 x batch), so
the loop takes its direct path and runs no extra forward pass; pass a smaller chunk to measure
GradCache's cost. The goal in issue #19 is MFU >= 45 %.

``--lora-float32`` runs the step as lcoemb did before it trained under bf16 autocast on every
device (it did on CPUs only): peft then computes each LoRA branch in float32 on the bf16 base,
float32 GEMMs plus float32 copies of every adapted layer's input and output. It exists to
measure that change side by side on the same GPU.

Run (one H100/H200, under 5 minutes; no network)
------------------------------------------------
    python benchmarks/gpu_train_step.py
    python benchmarks/gpu_train_step.py --batch-size 128 --mini-batch-size 96 --words 64
    python benchmarks/gpu_train_step.py --tiny --device cpu   # smoke run of the script itself
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import tempfile
import time
from pathlib import Path

#: dense bf16 tensor-core peaks (no sparsity), TFLOP/s
PEAKS = {"H200": 989.4, "H100 PCIe": 756.0, "H100": 989.4, "A100": 312.0, "L40S": 362.0}

SHAPE_3B = {
    "hidden_size": 2048,
    "num_hidden_layers": 36,
    "num_attention_heads": 16,
    "num_key_value_heads": 2,
    "intermediate_size": 11008,
}
SHAPE_TINY = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
}


def peak_tflops(device: str, override: float | None) -> float | None:
    import torch

    if override:
        return override
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAKS.items() if k in name), None)


def write_data(path: Path, n_triplets: int, words: int, seed: int) -> None:
    """Triplets of ``words`` random common English words each (about 1.5 tokens a word)."""
    from lcoemb.synthetic import WORDS

    rng = random.Random(seed)
    with path.open("w") as f:
        for _ in range(n_triplets):
            row = {
                k: " ".join(rng.choices(WORDS, k=words)) for k in ("anchor", "positive", "negative")
            }
            f.write(json.dumps(row) + "\n")


def forward_flops(
    model_dir: Path, data: Path, n_items: int, lora_r: int
) -> tuple[float, float, float]:
    """Mean forward FLOPs and mean real tokens per item, counted on the items the loop sees,
    and the share LoRA at rank ``lora_r`` on every Linear adds to the forward (not counted).

    Parameters are counted on a meta-device copy and tokens with the backbone's own ``prepare``
    (on a stand-in module, which only places the tensors), so nothing loads the weights twice.
    """
    import torch

    from lcoemb.backbones.qwen2_5_omni import QwenOmniBackbone
    from lcoemb.inputs import load_item

    cls = QwenOmniBackbone
    config = cls.model_class.config_class.from_pretrained(model_dir)
    with torch.device("meta"):
        lm = cls.model_class(config).model.language_model
    params = sum(p.numel() for name, p in lm.named_parameters() if "embed_tokens" not in name)
    linears = [m for m in lm.modules() if isinstance(m, torch.nn.Linear)]
    # LoRA's FLOPs per token: x @ A (in -> r), then @ B (r -> out), on every Linear
    lora = 2 * lora_r * sum(m.in_features + m.out_features for m in linears)
    text = config.text_config
    backbone = cls(torch.nn.Linear(1, 1), cls.processor_class.from_pretrained(model_dir), "")
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    lengths = []
    for i, row in enumerate(rows[: max(1, n_items // 3)]):
        for value in row.values():
            inputs = backbone.prepare([load_item(value, i)])
            lengths.append(int(inputs["attention_mask"].sum()))
    layers, width = text.num_hidden_layers, text.hidden_size
    flops = [2 * params * n + 4 * layers * width * n**2 for n in lengths]
    tokens = sum(lengths) / len(lengths)
    mean = sum(flops) / len(flops)
    return mean, tokens, lora * tokens / mean


def check_shape(model_dir: Path, shape: dict[str, int]) -> None:
    """Refuse a reused ``--model-dir`` whose language model is not the shape asked for."""
    config = json.loads((model_dir / "config.json").read_text())["text_config"]
    wrong = {k: (config.get(k), v) for k, v in shape.items() if config.get(k) != v}
    if wrong:
        raise SystemExit(
            f"{model_dir} holds another model shape (saved, asked): {wrong}; "
            "pass another --model-dir or delete it"
        )


@contextlib.contextmanager
def lora_in_float32():
    """The step as lcoemb ran it on GPUs before: no autocast, peft's own float32 LoRA branch
    (each adapted layer's input cast up to the float32 LoRA weights, the sum cast back)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    from lcoemb.training.trainer import Trainer

    build, autocast = Trainer.build_model, Trainer.autocast

    def build_model(self):
        encoder = build(self)
        for module in encoder.peft_model.modules():
            if isinstance(module, BaseTunerLayer):
                module.cast_input_dtype_enabled = True
        return encoder

    Trainer.build_model = build_model
    Trainer.autocast = lambda self: contextlib.nullcontext()
    try:
        yield
    finally:
        Trainer.build_model, Trainer.autocast = build, autocast


def profiled(run, device: str, path: Path) -> None:
    """``run()`` under torch.profiler; its operators, by self time on ``device`` (CUDA) or the
    CPU, go to ``path`` as a table, with the busy share of the device's wall time. Every step
    is profiled, warm-up included, so read shares, not absolute times."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    cuda = device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    t0 = time.perf_counter()
    with profile(activities=activities) as prof:
        run()
        if cuda:
            torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    events = prof.key_averages()
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    busy = sum(getattr(e, key) for e in events) / 1e6
    table = events.table(sort_by=key, row_limit=40, max_name_column_width=60)
    header = (
        f"profiled wall {wall:.1f} s; {'device' if cuda else 'CPU'} self time {busy:.1f} s "
        f"({100 * busy / wall:.0f} % of the wall time)\n"
    )
    path.write_text(header + table + "\n")
    print(header + table, flush=True)


def main(argv: list[str] | None = None) -> None:
    import torch

    from lcoemb.config import TrainConfig
    from lcoemb.testing import make_tiny_qwen2_5_omni_thinker
    from lcoemb.training.trainer import train

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--batch-size", type=int, default=None, help="triplets per step (default 256; --tiny 8)"
    )
    p.add_argument("--mini-batch-size", type=int, default=None, help="default: 3 x batch")
    p.add_argument("--words", type=int, default=16, help="words per text")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=3, help="untimed first steps")
    p.add_argument("--lora-r", type=int, default=64)
    p.add_argument("--no-gradient-checkpointing", action="store_true")
    p.add_argument(
        "--lora-float32",
        action="store_true",
        help="LoRA computed in float32 without autocast, as before (for a side-by-side)",
    )
    p.add_argument("--device", default="cuda")
    p.add_argument(
        "--model-dir",
        default=None,
        help="keep the random checkpoint in this folder and reuse it when it is already there "
        "(runs of different settings then skip writing ~6 GB each); default: a temporary one",
    )
    p.add_argument("--peak-tflops", type=float, default=None, help="override the GPU's peak")
    p.add_argument("--tiny", action="store_true", help="a 64-wide model: smoke-test the script")
    p.add_argument(
        "--profile",
        default=None,
        metavar="FILE",
        help="also profile the run (torch.profiler) and write its operators, by self device "
        "time, to FILE: where the step time goes (attention, GEMMs, LoRA, the loss, gaps)",
    )
    args = p.parse_args(argv)
    args.batch_size = args.batch_size or (8 if args.tiny else 256)
    if args.warmup >= args.steps:
        p.error("--warmup must be smaller than --steps")
    chunk = args.mini_batch_size or 3 * args.batch_size
    checkpointing = not args.no_gradient_checkpointing
    shape = SHAPE_TINY if args.tiny else SHAPE_3B

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        model_dir = Path(args.model_dir) if args.model_dir else root / "model"
        reused = (model_dir / "config.json").is_file()
        if reused:
            check_shape(model_dir, shape)
        else:  # written beside, then renamed: a run killed while writing leaves no half folder
            partial = model_dir.with_name(model_dir.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            make_tiny_qwen2_5_omni_thinker(
                partial, **shape, vision_depth=1, audio_layers=1, dtype=torch.bfloat16,
                init_std=0.02,
            )  # fmt: skip
            partial.rename(model_dir)
        data = root / "triplets.jsonl"
        write_data(data, args.batch_size * args.steps, args.words, seed=0)
        flops_item, tokens_item, lora_share = forward_flops(model_dir, data, 96, args.lora_r)
        print(
            f"checkpoint {'reused' if reused else 'written'}, data written "
            f"in {time.perf_counter() - t0:.0f} s",
            flush=True,
        )
        config = TrainConfig(
            model=str(model_dir),
            data=[str(data)],
            output=str(root / "run"),
            max_steps=args.steps,
            batch_size=args.batch_size,
            mini_batch_size=chunk,
            lora_r=args.lora_r,
            lora_alpha=2 * args.lora_r,
            lora_dropout=0.0,
            warmup_steps=0,
            gradient_checkpointing=checkpointing,
            precision="bf16",
            save_steps=10**9,
            device=args.device,
        )
        t0 = time.perf_counter()
        with lora_in_float32() if args.lora_float32 else contextlib.nullcontext():
            if args.profile:
                profiled(lambda: train(config), args.device, Path(args.profile))
            else:
                train(config)
        wall = time.perf_counter() - t0
        log = [json.loads(line) for line in (root / "run" / "log.jsonl").read_text().splitlines()]
        peak_mem = (
            torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else None
        )

    ends = [r["step"] * args.batch_size / r["triplets_per_s"] for r in log]
    seconds = (
        (ends[-1] - ends[args.warmup - 1]) / (args.steps - args.warmup)
        if args.warmup
        else ends[-1] / args.steps
    )
    items = 3 * args.batch_size
    model_flops = 2 * flops_item * items / seconds
    passes = (1 if chunk < items else 0) + 1 + (1 if checkpointing else 0) + 1
    peak = peak_tflops(args.device, args.peak_tflops)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device

    print()
    print(f"device: {name}; peak bf16 dense: {peak or 'unknown (pass --peak-tflops)'} TFLOP/s")
    print(
        f"model: {shape['num_hidden_layers']} layers x {shape['hidden_size']} "
        f"(MLP {shape['intermediate_size']}), LoRA r{args.lora_r} "
        f"({'float32, no autocast' if args.lora_float32 else 'bf16 autocast'}; "
        f"{100 * lora_share:.1f} % of the forward's FLOPs, not counted), gradient checkpointing "
        f"{'on' if checkpointing else 'off'}; batch {args.batch_size} triplets = {items} items "
        f"of {tokens_item:.0f} tokens, GradCache chunk {chunk}"
        + (" (direct path)" if chunk >= items else "")
    )
    print(
        f"step time {seconds:.3f} s ({args.steps - args.warmup} timed steps; {wall:.0f} s in all)"
    )
    print(
        f"throughput: {args.batch_size / seconds:.1f} triplets/s, "
        f"{items * tokens_item / seconds:,.0f} tokens/s"
    )
    rows = [
        ("model TFLOP/s (2F: frozen base)", model_flops),
        ("full-training convention (3F)", 1.5 * model_flops),
        (f"hardware TFLOP/s ({passes}F)", passes / 2 * model_flops),
    ]
    for label, value in rows:
        share = f"  = {100 * value / 1e12 / peak:.1f} % of peak" if peak else ""
        print(f"{label:36s} {value / 1e12:8.2f}{share}")
    if peak_mem is not None:
        print(f"peak GPU memory allocated: {peak_mem:.1f} GiB")


if __name__ == "__main__":
    main()
