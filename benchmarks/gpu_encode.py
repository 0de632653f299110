"""Encode throughput on one GPU: lcoemb's ``OmniEncoder`` against mteb's ``LCOEmbedding`` wrapper.

What it measures
----------------
The comparison of ``encode_throughput.py`` (same inputs, same checkpoint, both paths in one
process; mteb's wrapper fed through mteb's own ``datasets`` → ``create_dataloader`` path with a
real task's metadata, ours given plain ``str`` and ``PIL.Image.Image`` items), on a GPU and on a
randomly initialised Qwen2.5-Omni thinker whose language model has Qwen2.5-Omni-3B's shape (the
one ``gpu_train_step.py`` trains: 36 layers, width 2048, 16/2 heads, MLP 11008). Its vision tower
is ``--vision-depth`` (8) blocks of that width, about the parameters and FLOPs per patch of the
3B model's 32-block, 1280-wide tower; the audio tower is one layer (no audio set: decoding audio
through ``datasets`` needs torchcodec and ffmpeg). bf16 weights, ``--attn`` attention (``sdpa``).

Sets (seeded): ``short``, queries of 4-16 words; ``long``, passages of 75-300 words (about
100-400 tokens; the wrapper, like lcoemb, keeps the first 300 text tokens); ``image``, RGB
pictures with sides of 64-400 px (``encode_throughput.make_images``). Every set runs at each of
``--batch-sizes`` with the same batch size for both paths.

For each set and batch size: one warm-up batch per path, then ``--repeats`` timed runs,
interleaved, the fastest counting (each encode returns host arrays, so the GPU work is inside
the timing). The row shows items/s of both paths, the ratio, the minimum per-item cosine
between the two paths' vectors, and the padding share of each path's batches. Text rows also
show the model's FLOP rate on real tokens, ``2*P*L + 4*n_layers*d*L**2`` per item as in
``encode_throughput.py``, as a share of the GPU's dense bf16 peak (``gpu_train_step.PEAKS``), and
for lcoemb the rate of what it executes (each batch's shared chat-template prefix once).

Rows are printed (and written to ``--json``) as soon as they are measured, so a run cut short
still reports. If mteb cannot be imported, lcoemb's side is measured alone.

Run (one H100/H200, about 3 minutes; no network; ``gpu_all.sh`` runs it after the train step)
------------------------------------------------
    python benchmarks/gpu_encode.py --json gpu_encode.json
    python benchmarks/gpu_encode.py --sets long --batch-sizes 16,64 --n-long 1024
    python benchmarks/gpu_encode.py --tiny --device cpu   # smoke run of the script itself
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import encode_throughput as et
import numpy as np
from common import print_table
from gpu_train_step import SHAPE_3B, SHAPE_TINY, peak_tflops

SETS = ("short", "long", "image")
#: words per item of each text set (uniform); ~1.3 tokens a word with the checkpoint's vocabulary
WORDS = {"short": (4, 16), "long": (75, 300)}


def make_texts(n: int, seed: int, words: list[str], lo: int, hi: int) -> list[str]:
    """``n`` texts of ``lo``-``hi`` words (uniform), cut into capitalised sentences."""
    rng = np.random.default_rng(seed)
    texts = []
    for length in rng.integers(lo, hi + 1, size=n):
        chosen = [str(w) for w in rng.choice(words, size=int(length))]
        sentences, start = [], 0
        while start < length:
            stop = min(int(length), start + int(rng.integers(6, 18)))
            sentence = " ".join(chosen[start:stop])
            sentences.append(sentence[0].upper() + sentence[1:] + ".")
            start = stop
        texts.append(" ".join(sentences))
    return texts


class GpuBench(et.Bench):
    """``encode_throughput.Bench`` on ``args.device``, with the wrapper optional."""

    def __init__(self, args: argparse.Namespace, model_dir: Path):
        import torch

        from lcoemb import OmniEncoder

        self.args = args
        self.torch = torch
        self.ours = OmniEncoder.from_pretrained(
            model_dir, device=args.device, dtype="bfloat16", attn_implementation=args.attn
        )
        self.wrapper: Any = None
        self.ids: dict[str, list[list[int]]] = {}
        self.wrapper_error = ""
        try:
            import mteb
            from mteb.models.model_implementations.lco_embedding_models import LCOEmbedding

            self.metadata = {s: mteb.get_task(et.MTEB_TASKS[s]).metadata for s in ("text", "image")}
            self.wrapper = LCOEmbedding(
                str(model_dir), device=args.device, attn_implementation=args.attn
            )
            self.processor = self.wrapper.processor
        except Exception:  # measure lcoemb alone rather than nothing
            self.wrapper_error = traceback.format_exc(limit=3)
        text_model = self.ours.backbone.model.model.language_model
        embed = text_model.embed_tokens.weight.numel()
        self.text_params = sum(p.numel() for p in text_model.parameters()) - embed
        config = self.ours.backbone.text_config
        self.n_layers = int(config.num_hidden_layers)
        self.width = int(config.hidden_size)

    def timed(self, run: Any) -> tuple[np.ndarray, float]:
        if self.args.device.startswith("cuda"):
            self.torch.cuda.synchronize()
        start = time.perf_counter()
        out = np.asarray(run(), dtype=np.float32)
        if self.args.device.startswith("cuda"):
            self.torch.cuda.synchronize()
        return out, time.perf_counter() - start

    def measure(self, name: str, column: list[Any], bs: int, peak: float | None) -> dict[str, str]:
        """One row: both paths on ``column`` at batch size ``bs``."""
        modality = "image" if name == "image" else "text"

        def ours(items: list[Any]) -> np.ndarray:
            return self.ours.encode(items, batch_size=bs)

        def wrapper(items: list[Any]) -> np.ndarray:
            return self.run_wrapper(modality, items, batch_size=bs)[0]

        runs = {"lcoemb": ours} if self.wrapper is None else {"wrapper": wrapper, "lcoemb": ours}
        for run in runs.values():  # warm-up: the first batch
            run(column[:bs])
        best = dict.fromkeys(runs, math.inf)
        vecs: dict[str, np.ndarray] = {}
        for _ in range(self.args.repeats):
            for path, run in runs.items():
                vecs[path], seconds = self.timed(lambda run=run: run(column))
                best[path] = min(best[path], seconds)
        n = len(column)
        row = {"set": name, "n": str(n), "batch": str(bs)}
        row["lcoemb items/s"] = f"{n / best['lcoemb']:.1f}"
        plan = self.ours.plan_batches(column, bs)
        if self.wrapper is None:
            return row
        row["wrapper items/s"] = f"{n / best['wrapper']:.1f}"
        row["ratio"] = f"{best['wrapper'] / best['lcoemb']:.2f}x"
        row["min cos"] = f"{et.min_cosine(vecs['wrapper'], vecs['lcoemb']):.6f}"
        if name not in self.ids:  # LM token ids of each item alone, as the wrapper templates it
            self.ids[name] = self.lm_ids(modality, column)
        ids = self.ids[name]
        lengths = [len(x) for x in ids]
        row["tokens mean/max"] = f"{np.mean(lengths):.0f}/{max(lengths)}"
        pads = [et.padding_fraction(lengths, b) for b in (et.input_order_batches(n, bs), plan)]
        row["padding wrapper/lcoemb"] = f"{pads[0]:.1%} / {pads[1]:.1%}"
        if modality == "text":
            model = self.text_flops(lengths)
            executed = self.executed_text_flops(ids, plan)

            def rate(flops: float, seconds: float) -> str:
                tflops = flops / seconds / 1e12
                return f"{tflops:.4g}" + (f" ({tflops / peak:.0%})" if peak else "")

            row["wrapper TFLOP/s"] = rate(model, best["wrapper"])
            row["lcoemb TFLOP/s"] = rate(model, best["lcoemb"])
            row["lcoemb executed TFLOP/s"] = rate(executed, best["lcoemb"])
        return row


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--attn", default="sdpa", help="attn_implementation of both paths")
    p.add_argument("--sets", default=",".join(SETS), help="comma-separated: short,long,image")
    p.add_argument("--batch-sizes", default="32,128", help="comma-separated, same for both paths")
    p.add_argument("--n-short", type=int, default=1024)
    p.add_argument("--n-long", type=int, default=512)
    p.add_argument("--n-images", type=int, default=256)
    p.add_argument("--vision-depth", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2, help="timed runs per path; the best counts")
    p.add_argument("--init-std", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--peak-tflops", type=float, default=None, help="override the GPU's peak")
    p.add_argument("--budget-s", type=float, default=200, help="start no row after this")
    p.add_argument("--json", default=None, help="also write the rows to this file")
    p.add_argument("--tiny", action="store_true", help="a 64-wide model: smoke-test the script")
    args = p.parse_args(argv)
    if args.tiny:
        args.n_short, args.n_long, args.n_images, args.vision_depth = 16, 6, 4, 1
        args.batch_sizes, args.repeats = "4", 1
    args.sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    if unknown := set(args.sets) - set(SETS):
        p.error(f"unknown sets {sorted(unknown)}; choose from {', '.join(SETS)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")  # before tqdm is first imported
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")
    t_start = time.perf_counter()

    import torch
    import transformers

    import lcoemb
    from lcoemb.testing import make_tiny_qwen2_5_omni_thinker

    transformers.logging.set_verbosity_error()
    shape = SHAPE_TINY if args.tiny else SHAPE_3B
    peak = peak_tflops(args.device, args.peak_tflops)
    cuda = args.device.startswith("cuda")
    name = torch.cuda.get_device_name() if cuda else platform.processor() or args.device
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, transformers "
        f"{transformers.__version__}, lcoemb {lcoemb.__version__}; device {name}, peak bf16 "
        f"dense {peak or 'unknown'} TFLOP/s; attention {args.attn}",
        flush=True,
    )
    rows: list[dict[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="lcoemb-gpu-encode-") as tmp:
        t0 = time.perf_counter()
        model_dir = make_tiny_qwen2_5_omni_thinker(
            Path(tmp) / "model", **shape, vision_depth=args.vision_depth, audio_layers=1,
            max_pixels=et.QWEN_OMNI_MAX_PIXELS, dtype=torch.bfloat16, init_std=args.init_std,
        )  # fmt: skip
        print(f"checkpoint written in {time.perf_counter() - t0:.0f} s", flush=True)
        t0 = time.perf_counter()
        bench = GpuBench(args, model_dir)
        print(f"both paths loaded in {time.perf_counter() - t0:.0f} s", flush=True)
        if bench.wrapper is None:
            print(f"mteb's wrapper unavailable, lcoemb alone:\n{bench.wrapper_error}", flush=True)
        else:
            import mteb

            print(f"mteb {mteb.__version__}", flush=True)
        print(
            f"model: {shape['num_hidden_layers']} layers x {shape['hidden_size']} (MLP "
            f"{shape['intermediate_size']}, {shape['num_attention_heads']}/"
            f"{shape['num_key_value_heads']} heads), {bench.text_params / 1e9:.2f} B "
            f"non-embedding LM params; vision tower {args.vision_depth} blocks",
            flush=True,
        )
        vocabulary = et.vocabulary(bench.ours.backbone.processor.tokenizer)
        for i, set_name in enumerate(args.sets):
            if set_name == "image":
                column: list[Any] = et.make_images(args.n_images, args.seed + 1)
            else:
                n = args.n_short if set_name == "short" else args.n_long
                column = make_texts(n, args.seed + 10 * i, vocabulary, *WORDS[set_name])
            for bs in args.batch_sizes:
                if time.perf_counter() - t_start > args.budget_s:
                    print(f"budget of {args.budget_s:.0f} s spent: {set_name} @ {bs} skipped")
                    continue
                t0 = time.perf_counter()
                try:
                    row = bench.measure(set_name, column, bs, peak)
                except Exception:  # report it and go on with the next row
                    print(f"{set_name} @ batch {bs} failed:\n{traceback.format_exc()}", flush=True)
                    continue
                rows.append(row)
                print(json.dumps(row) + f"  [{time.perf_counter() - t0:.0f} s]", flush=True)
                if args.json:  # after every row, so a run cut short keeps what it measured
                    Path(args.json).write_text(json.dumps({"device": name, "rows": rows}) + "\n")
        if cuda:
            print(f"peak GPU memory allocated: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s\n")
    if rows:
        keys = list(dict.fromkeys(k for r in rows for k in r))
        print_table([{k: r.get(k, "-") for k in keys} for r in rows])


if __name__ == "__main__":
    main()
