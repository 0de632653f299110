"""Encode throughput of lcoemb's ``OmniEncoder`` against mteb's reference ``LCOEmbedding`` wrapper.

What it measures
----------------
Items per second for two ways of embedding the *same* inputs with the *same* checkpoint, in one
process, one after the other:

* the peer: mteb 2.x ``mteb.models.model_implementations.lco_embedding_models.LCOEmbedding``,
  fed through mteb's own input path: a ``datasets.Dataset`` (a ``text`` column, a
  ``datasets.Image()`` or a ``datasets.Audio()`` column) turned into a ``DataLoader`` by
  ``mteb._create_dataloaders.create_dataloader`` with the metadata of a real mteb task of that
  modality (the wrapper swaps in its own ``AudioCollator`` for audio);
* ours: ``lcoemb.OmniEncoder.encode`` on plain Python items (``str``, ``PIL.Image.Image``,
  ``lcoemb.Audio(array, sampling_rate)``).

Both run with the same batch size, bf16 weights, SDPA attention and ``torch.set_num_threads``.
Each path encodes one batch of every set once (warm-up), then the whole set is timed with
``time.perf_counter`` ``--repeats`` times, interleaved (wrapper, lcoemb, wrapper, ...), and the
fastest run counts. Every timed run also records how much of the CPU *other* processes used
meanwhile (from ``/proc/stat``): two threads on two cores slow down several-fold when anything
else runs, so a path whose best run was not quiet (> 5 %) is run again, up to ``--retries``
times, and the table notes any set whose kept runs were still noisy. Vectors are compared item
by item; the table shows the minimum cosine between ours and the wrapper's (expected >= 0.9999;
``--noise-floor`` also shows what merely re-batching does to lcoemb's own vectors in bf16).

The model is a randomly initialised Qwen2.5-Omni thinker written by
``lcoemb.testing.make_tiny_qwen2_5_omni_thinker`` into a temporary folder: by default a
1024-wide, 8-layer text decoder (16 query / 8 key-value heads, MLP 2816, ~94 M non-embedding
parameters), a 2-block vision tower and a 2-layer audio tower of the same width. Weights are
drawn from N(0, 0.02), Qwen's ``initializer_range`` (``--init-std``): at this width that keeps
unrelated inputs apart (mean pairwise cosine ~0.4-0.9 per set) while the activations stay in a
sane range; the helper's default for tiny test models (0.2) makes a 1024-wide bf16 model
chaotic, so that merely re-batching moves vectors by more than 1e-3. The image
processor keeps Qwen2.5-Omni's shipped pixel cap (``max_pixels`` 12,845,056), so the 64-400 px
images here are never downscaled and cost what they would cost with the released checkpoint
(one LM token per 28x28 pixels, at least 56x56 pixels).

Input sets (seeded, deterministic)
----------------------------------
* text: 5-250 words, log-normal lengths (median 40 words), drawn from the words the checkpoint's
  tokenizer keeps whole, so a word costs ~1.3 tokens as with Qwen's real vocabulary;
* long: retrieval-corpus passages of 85-360 words from the same words, uniform, so ~100-420
  tokens before the recipe's 300-token cap, about a third of them cut to it;
* image: RGB pictures with independent random sides in 64-400 px;
* audio: 2-8 s clips (tones plus noise), 3 in 4 at 16 kHz and 1 in 4 at 44.1 kHz, so both
  paths resample. Clips go through ``datasets.Audio()`` (16-bit WAV); ours get the decoded
  arrays, so both paths see identical samples.

Text FLOPs and roofline
-----------------------
For the text set the script counts the real (non-padding) tokens of every item by templating it
exactly as the wrapper does (300-token cap, chat template, one-word suffix) and tokenising it
with the checkpoint's processor. With ``P`` the non-embedding parameters of the language model
(attention and MLP weights and biases, norms), ``n_layers`` its depth, ``d`` its width and ``L``
an item's real tokens, the forward pass costs

    FLOPs(item) = 2 * P * L + 4 * n_layers * d * L**2

(weight matmuls, plus QK^T and AV counted densely, the PaLM convention): the model's work on
real tokens, the same count for both paths. The wrapper executes all of it (and the padding).
lcoemb executes less: within a batch, every item starts with the same chat-template tokens (the
system turn, 88 tokens with this checkpoint's small test vocabulary, ~40 with Qwen's own), and
lcoemb computes that shared prefix once per batch. Its executed FLOPs count, per batch, the
prefix once (``2 * P * p + 4 * n_layers * d * p**2``) and each item's other ``L - p`` tokens
attending to ``L`` keys (``2 * P * (L - p) + 4 * n_layers * d * (L - p) * L``).

The table's GFLOP/s columns are that model work on real tokens per second of each path's
encode time (the items/s ratio in other units), and "% roofline" compares them with a plain
2048x2048 @ 2048x2048 matmul in the run's dtype, timed in the same run on the same threads.

Both paths run in ``--dtype``: by default the device's own (bf16 on a CPU with AMX or AVX-512
bf16, float32 elsewhere, where PyTorch has no fast bf16 kernels). The wrapper loads in bf16 as
mteb writes it and is cast to the run's dtype after loading; the checkpoint is bf16, so its
float32 weights are the same numbers. The last column divides
lcoemb's *executed* FLOPs by its time instead: how well it uses the hardware. For the wrapper
the two coincide (it executes every real token, plus the padding, which is not counted).

Padding is the fraction of LM sequence positions (batch size x longest item, per batch) that
are padding: the wrapper batches in input order, ours in :meth:`OmniEncoder.plan_batches` order.
For audio the script also reports the share of the mel spectrogram input that is zero padding
(the wrapper pads every clip to 300 s, lcoemb to the batch's longest clip plus 1 s).

LCO-Mini (``--lco-mini``)
------------------------
Instead of the comparison above: the embedded default ``lco-mini`` (real weights, in the
device's default dtype: bf16 on a CPU with AMX or AVX-512 bf16, float32 on others;
``--mini-dtype`` sets it), loaded once, on its plain path against its fast path
(:class:`MiniBench` says what each switches), interleaved and best-of like the sets above,
per set of its own generators' test split: short scene captions (``text``, ~45 tokens
templated), rendered words (``image-text``: the reading tower finds and reads them), shapes
scenes (``image-plain``: nothing to read), espeak-ng speech
(``audio``) and 8-frame clips (``video``). The table gives items/s of both paths and the minimum
cosine between their vectors; ``--noise-floor`` adds the plain path encoding each item alone
(batch 1): the fast path's vectors are those, bit for bit, while the plain path's own batched
vectors differ from them (bf16 SmolLM2 turns last-bit differences into cosines of ~0.999).
``--mini-detect-sizes 320,224``, ``--mini-fused-detector`` and ``--mini-merged`` time the opt-in
levers that change vectors (a smaller text-detector side, the detector with its batch norms folded
into bf16 convolutions, the LCO adapter merged into the bf16 LM) against the plain vectors.
``--mini-compare-dtype bfloat16`` times every set again on a second copy of the model in that
dtype, interleaved with the fast path: what the default dtype buys on this CPU.

Run
---
    python benchmarks/encode_throughput.py              # full run: ~5 min on AMX, 28 on AVX2
    python benchmarks/encode_throughput.py --dtype bfloat16   # default: the device's own dtype
    python benchmarks/encode_throughput.py --quick      # smoke run, < 1 min
    python benchmarks/encode_throughput.py --sets text --n-text 512 --batch-size 16
    python benchmarks/encode_throughput.py --lco-mini --noise-floor --mini-detect-sizes 320,224

Needs the ``eval`` extra (mteb, datasets, torchcodec) and no network access.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from common import OtherLoad, cpu_name
from common import print_table as print_rows

SETS = ("text", "long", "image", "audio")
#: what each set is made of (``long``: retrieval passages, text like ``text``)
MODALITY = {"text": "text", "long": "text", "image": "image", "audio": "audio"}
#: LCO-Mini's sets (``--lco-mini``): short captions, images with and without text, speech, clips
MINI_SETS = ("text", "image-text", "image-plain", "audio", "video")
#: A timing counts as quiet when other processes used at most this share of the CPU.
QUIET = 0.05
#: Qwen2.5-Omni's shipped image cap (preprocessor_config.json ``max_pixels``).
QWEN_OMNI_MAX_PIXELS = 12_845_056
#: mteb tasks whose metadata builds each set's DataLoader (only their metadata is read).
MTEB_TASKS = {
    "text": "TwentyNewsgroupsClustering.v2",
    "image": "CIFAR10Clustering",
    "audio": "AmbientAcousticContextClustering",
}


# --------------------------------------------------------------------------- input sets


def vocabulary(tokenizer: Any) -> list[str]:
    """Words the checkpoint's tokenizer keeps whole (one token after a space).

    The tiny checkpoint's BPE has only a few hundred merges, so ordinary English would cost ~3
    tokens a word; drawing from its whole-word tokens gives ~1.3 tokens a word with punctuation,
    as Qwen's 151k vocabulary gives on English, so token counts (and cost) are realistic.
    """
    words = (t[1:] for t in tokenizer.get_vocab() if t.startswith("\u0120"))
    return sorted(w for w in words if w.isalpha() and len(w) > 1)


def _prose(rng: np.random.Generator, words: list[str], length: int) -> str:
    """``length`` random words as sentences of 6-17 words."""
    chosen = [str(w) for w in rng.choice(words, size=length)]
    sentences, start = [], 0
    while start < length:
        stop = min(length, start + int(rng.integers(6, 18)))
        sentence = " ".join(chosen[start:stop])
        sentences.append(sentence[0].upper() + sentence[1:] + ".")
        start = stop
    return " ".join(sentences)


def make_texts(n: int, seed: int, words: list[str]) -> list[str]:
    """``n`` texts of 5-250 words with a long-tailed (log-normal, median 40) length distribution."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(np.round(np.exp(rng.normal(math.log(40), 0.8, n))), 5, 250).astype(int)
    return [_prose(rng, words, int(length)) for length in lengths]


def make_passages(n: int, seed: int, words: list[str]) -> list[str]:
    """``n`` retrieval-corpus passages of 85-360 words, uniform: ~100-420 tokens, about a third
    of them over the 300-token cap (cut there, so many sit at it)."""
    rng = np.random.default_rng(seed)
    return [_prose(rng, words, int(length)) for length in rng.integers(85, 361, n)]


def make_images(n: int, seed: int) -> list[Any]:
    """``n`` RGB images, each side uniform in 64-400 px (smooth colour fields plus noise)."""
    import PIL.Image

    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        w, h = (int(v) for v in rng.integers(64, 401, size=2))
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        fx, fy = rng.uniform(0.005, 0.05, size=2)
        base = np.stack(
            [np.sin(x * fx + c) * np.cos(y * fy - c) for c in rng.uniform(0, 6.28, size=3)],
            axis=-1,
        )
        pixels = 127.5 + 100 * base + rng.normal(0, 12, size=(h, w, 3))
        images.append(PIL.Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB"))
    return images


def make_audio(n: int, seed: int) -> list[tuple[np.ndarray, int]]:
    """``n`` mono clips of 2-8 s: ``(float32 samples, sampling_rate)``, 1 in 4 at 44.1 kHz."""
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(n):
        sr = 44_100 if i % 4 == 3 else 16_000
        t = np.arange(int(rng.uniform(2.0, 8.0) * sr), dtype=np.float32) / sr
        wave = sum(
            rng.uniform(0.05, 0.2) * np.sin(2 * np.pi * rng.uniform(80, 4000) * t) for _ in range(3)
        )
        wave = wave + rng.normal(0, 0.02, size=t.shape)
        clips.append((wave.astype(np.float32), sr))
    return clips


# --------------------------------------------------------------------------- measurements


def matmul_roofline(dtype: str = "bfloat16", seconds: float = 0.5) -> float:
    """GFLOP/s of a 2048x2048 @ 2048x2048 matmul in ``dtype`` (best of three timings of about
    ``seconds`` each). A CPU without kernels for ``dtype`` (bf16 without AMX or AVX-512 runs
    at about 1 GFLOP/s) is timed on 512x512 instead, so the probe itself stays short."""
    import torch

    def rate(n: int, reps: int) -> tuple[float, float]:
        a = torch.randn(n, n, dtype=getattr(torch, dtype))
        b = torch.randn(n, n, dtype=getattr(torch, dtype))
        a @ b
        best = math.inf
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(reps):
                a @ b
            best = min(best, time.perf_counter() - start)
        return 2 * n**3 * reps / best / 1e9, best / reps

    probe, _ = rate(512, 1)
    if probe < 20:  # no fast kernels: 2048 would take a minute per call
        return probe
    _, per_call = rate(2048, 1)
    return rate(2048, max(1, round(seconds / per_call)))[0]


#: one timed run of a path: its vectors, its seconds, the CPU share other processes used
Run = Callable[[], tuple[np.ndarray, float, float | None]]


def best_of(
    runs: dict[str, Run], repeats: int, retries: int
) -> tuple[dict[str, tuple[float, float | None]], dict[str, np.ndarray]]:
    """Each path's fastest run (seconds, other processes' CPU share) and its vectors: the paths
    run interleaved ``repeats`` times, then a path whose best run was not quiet up to
    ``retries`` more times."""
    best: dict[str, tuple[float, float | None]] = {k: (math.inf, None) for k in runs}
    vecs: dict[str, np.ndarray] = {}
    for attempt in range(repeats + retries):
        for path, run in runs.items():
            seconds, share = best[path]
            if attempt >= repeats and (share is None or share <= QUIET):
                continue
            vecs[path], elapsed, load = run()
            if elapsed < seconds:
                best[path] = (elapsed, load)
    return best, vecs


def load_note(loads: list[float | None], names: str) -> str:
    """How busy the machine was during the kept runs, flagged when not quiet."""
    if any(x is None for x in loads):
        return "no /proc/stat: other processes' CPU share unknown"
    shares = " / ".join(f"{x:.0%}" for x in loads)
    noisy = max(loads) > QUIET  # type: ignore[type-var]
    return f"other processes used {shares} of the CPU during the kept {names} runs" + (
        "  (NOISY: rerun when idle)" if noisy else ""
    )


def padding_fraction(lengths: list[int], batches: list[list[int]]) -> float:
    """Share of ``sum(len(batch) * longest)`` positions that are padding."""
    total = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return 1.0 - sum(lengths[i] for b in batches for i in b) / total


def input_order_batches(n: int, batch_size: int) -> list[list[int]]:
    return [list(range(s, min(n, s + batch_size))) for s in range(0, n, batch_size)]


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())


@dataclass
class SetResult:
    name: str
    n: int
    wrapper_s: float
    ours_s: float
    min_cos: float
    pad_wrapper: float
    pad_ours: float
    gflop: float | None = None  # the model's FLOPs on real tokens (both paths)
    ours_executed_gflop: float | None = None  # what lcoemb computes (shared prefixes once)
    extra: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- the benchmark


class Bench:
    def __init__(self, args: argparse.Namespace, model_dir: Path):
        import mteb
        import torch
        from mteb.models.model_implementations.lco_embedding_models import LCOEmbedding

        from lcoemb import OmniEncoder

        self.args = args
        self.torch = torch
        self.wrapper = LCOEmbedding(str(model_dir), device="cpu", attn_implementation="sdpa")
        if args.dtype != "bfloat16":  # mteb loads bf16; the checkpoint's weights are bf16
            self.wrapper.model.to(getattr(torch, args.dtype))
        self.ours = OmniEncoder.from_pretrained(
            model_dir,
            device="cpu",
            dtype=args.dtype,
            attn_implementation="sdpa",
        )
        self.processor = self.wrapper.processor
        self.metadata = {m: mteb.get_task(task).metadata for m, task in MTEB_TASKS.items()}
        text_model = self.ours.backbone.model.model.language_model
        embed = text_model.embed_tokens.weight.numel()
        self.text_params = sum(p.numel() for p in text_model.parameters()) - embed
        config = self.ours.backbone.text_config
        self.n_layers = int(config.num_hidden_layers)
        self.width = int(config.hidden_size)

    # mteb's input path ------------------------------------------------------------------

    def dataloader(self, name: str, column: list[Any], batch_size: int | None = None) -> Any:
        import datasets
        from mteb._create_dataloaders import create_dataloader

        feature = {"text": datasets.Value("string"), "image": datasets.Image()}.get(
            name, datasets.Audio()
        )
        dataset = datasets.Dataset.from_dict(
            {name: column}, features=datasets.Features({name: feature})
        )
        return create_dataloader(
            dataset,
            task_metadata=self.metadata[name],
            input_column=name,
            batch_size=batch_size or self.args.batch_size,
        )

    def run_wrapper(
        self, name: str, column: list[Any], batch_size: int | None = None
    ) -> tuple[np.ndarray, float, float | None]:
        """The wrapper's vectors, its encode time (DataLoader iteration included) and the share
        of the CPU other processes used meanwhile."""
        loader = self.dataloader(name, column, batch_size)
        with OtherLoad() as load:
            start = time.perf_counter()
            out = self.wrapper.encode(
                loader, task_metadata=self.metadata[name], hf_split="test", hf_subset="default"
            )
            elapsed = time.perf_counter() - start
        return np.asarray(out, dtype=np.float32), elapsed, load.share

    def run_ours(self, items: list[Any]) -> tuple[np.ndarray, float, float | None]:
        with OtherLoad() as load:
            start = time.perf_counter()
            out = self.ours.encode(items, batch_size=self.args.batch_size)
            elapsed = time.perf_counter() - start
        return out, elapsed, load.share

    # LM sequence lengths, as the wrapper templates and processes each item alone -------------

    def lm_ids(self, name: str, values: list[Any]) -> list[list[int]]:
        ids_per_item = []
        for value in values:
            messages = self.wrapper._build_messages({name: [value]})
            text = self.processor.apply_chat_template(
                messages[0], tokenize=False, add_generation_prompt=True
            )
            kwargs: dict[str, Any] = {}
            if name == "image":
                kwargs["images"] = [value]
            elif name == "audio":
                kwargs["audio"] = [value]
                seconds = math.ceil(len(value) / 16_000) + 1
                kwargs["audio_kwargs"] = {"max_length": seconds * 16_000}
            ids = self.processor(text=[text], return_tensors="pt", **kwargs)["input_ids"]
            ids_per_item.append(ids[0].tolist())
        return ids_per_item

    def flops(self, queries: int, keys: int) -> float:
        """Forward FLOPs of ``queries`` tokens attending to ``keys`` (dense, PaLM convention)."""
        return 2 * self.text_params * queries + 4 * self.n_layers * self.width * queries * keys

    def text_flops(self, lengths: list[int]) -> float:
        return float(sum(self.flops(n, n) for n in lengths))

    def executed_text_flops(self, ids: list[list[int]], batches: list[list[int]]) -> float:
        """FLOPs of lcoemb's text path on real tokens: per batch, the shared prefix (found by
        the fast path's own rule) once, then each row's other tokens attending to the prefix and
        themselves; the prefix's own attention runs again in every other row (each row's
        attention is one call over all its tokens, for bit-identical vectors)."""
        import torch

        from lcoemb.backbones.fastpath import shared_prefix_length

        total = 0.0
        for batch in batches:
            rows = [ids[i] for i in batch]
            lengths = torch.tensor([len(r) for r in rows])
            n = int(lengths.max())
            # right-aligned like the fast path's batch; text positions are 0.. in every row
            tokens = torch.tensor([r + [-1] * (n - len(r)) for r in rows])[..., None]
            p = shared_prefix_length(tokens, torch.arange(n).expand(3, len(rows), n), lengths)
            total += self.flops(p, p) + sum(self.flops(len(r) - p, len(r)) for r in rows)
            total += (len(rows) - 1) * 4 * self.n_layers * self.width * p * p
        return total

    # one set --------------------------------------------------------------------------------

    def run_set(self, name: str) -> SetResult:
        from mteb.models.modality_collators import AudioCollator

        from lcoemb import Audio

        a = self.args
        bs = a.batch_size
        extra: list[str] = []
        modality = MODALITY[name]
        if modality == "text":
            make = make_texts if name == "text" else make_passages
            n = a.n_text if name == "text" else a.n_long
            column: list[Any] = make(
                n, a.seed + 3 * (name == "long"), vocabulary(self.processor.tokenizer)
            )
            items: list[Any] = list(column)
            values: list[Any] = list(column)
        elif name == "image":
            column = make_images(a.n_images, a.seed + 1)
            items = list(column)
            values = list(column)
        else:
            clips = make_audio(a.n_audio, a.seed + 2)
            column = [{"array": x, "sampling_rate": sr} for x, sr in clips]
            # decode once through datasets.Audio (16-bit WAV), so ours gets identical samples
            decoded = [row[name] for row in self.dataloader(modality, column).dataset]
            items = [Audio(np.asarray(d["array"]), int(d["sampling_rate"])) for d in decoded]
            values = [
                AudioCollator.resample_audio({"audio": d}, target_sampling_rate=16_000)
                for d in decoded
            ]
            seconds = [len(v) / 16_000 for v in values]
            extra.append(
                f"{len(values)} clips, {sum(seconds):.0f} s of audio "
                f"({sum(sr != 16_000 for _, sr in clips)} at 44.1 kHz)"
            )
        ids = self.lm_ids(modality, values)
        lengths = [len(x) for x in ids]
        pad_wrapper = padding_fraction(lengths, input_order_batches(len(items), bs))
        plan = self.ours.plan_batches(items, bs)
        pad_ours = padding_fraction(lengths, plan)
        if name == "audio":
            n_samples = [len(v) for v in values]
            real = sum(n_samples)
            wrapper_mel = len(values) * self.wrapper.max_audio_length
            ours_mel = sum(
                len(b) * (math.ceil(max(n_samples[i] for i in b) / 16_000) + 1) * 16_000
                for b in plan
            )
            extra.append(
                f"mel input that is zero padding: wrapper {1 - real / wrapper_mel:.1%}, "
                f"lcoemb {1 - real / ours_mel:.1%}"
            )

        # warm-up: one batch through each path; then the best of `repeats` timings, interleaved,
        # with up to `retries` more runs of a path whose best run shared the CPU
        self.run_wrapper(modality, column[:bs])
        self.run_ours(items[:bs])
        runs = {
            "wrapper": lambda: self.run_wrapper(modality, column),
            "ours": lambda: self.run_ours(items),
        }
        best, vecs = best_of(runs, a.repeats, a.retries)
        (wrapper_s, wrapper_load), (ours_s, ours_load) = best["wrapper"], best["ours"]
        wrapper_vecs, ours_vecs = vecs["wrapper"], vecs["ours"]
        if wrapper_load is not None and ours_load is not None:
            extra.append(load_note([wrapper_load, ours_load], "wrapper / lcoemb"))
        if a.noise_floor:  # what re-batching alone does, to each path and between them
            single = self.ours.encode(items, batch_size=1)
            wrapper_single = self.run_wrapper(modality, column, batch_size=1)[0]
            extra.append(
                f"noise floor (min cos): lcoemb batch {bs} vs 1 = "
                f"{min_cosine(ours_vecs, single):.6f}; wrapper batch {bs} vs 1 = "
                f"{min_cosine(wrapper_vecs, wrapper_single):.6f}; lcoemb batch 1 vs wrapper "
                f"batch 1 = {min_cosine(single, wrapper_single):.6f}"
            )

        gflop = executed = None
        if modality == "text":
            gflop = self.text_flops(lengths) / 1e9
            executed = self.executed_text_flops(ids, plan) / 1e9
            extra.append(
                f"{len(items)} texts, {sum(lengths)} real tokens (mean {np.mean(lengths):.0f}, "
                f"max {max(lengths)}), {gflop:.0f} GFLOP of model work on them; lcoemb executes "
                f"{executed:.0f} GFLOP, as {1 - executed / gflop:.0%} are shared prefixes it "
                "computes once per batch"
            )
            if name == "long":
                tokenizer = self.processor.tokenizer
                raw = [len(tokenizer(t, add_special_tokens=False).input_ids) for t in column]
                extra.append(
                    f"passages of {min(raw)}-{max(raw)} tokens (median {np.median(raw):.0f}) "
                    f"before the 300-token cap, {np.mean(np.array(raw) > 300):.0%} cut to it"
                )
        elif name == "image":
            sizes = [im.size[0] * im.size[1] for im in values]
            extra.append(
                f"{len(items)} images, {np.mean(sizes) / 1e3:.0f} kpx mean, "
                f"LM tokens mean {np.mean(lengths):.0f}, max {max(lengths)}"
            )
        return SetResult(
            name,
            len(items),
            wrapper_s,
            ours_s,
            min_cosine(wrapper_vecs, ours_vecs),
            pad_wrapper,
            pad_ours,
            gflop,
            executed,
            extra,
        )


# --------------------------------------------------------------------------- LCO-Mini


class MiniBench:
    """LCO-Mini (``lco-mini``, the embedded default) on its plain path against its fast path,
    one loaded model switched between them per timed run:

    * plain: the path before the fast path: the language model's own forward
      (``backbone.fast_text_path = False``), EfficientNet once per batch
      (``backbone.batch_invariant = False``) and the reading tower as it was (the detector in
      contiguous layout, 8 images per detector call), EfficientNet as shipped (contiguous,
      unfused) and Whisper's encoder in CTranslate2;
    * fast: the defaults: the last-token fast path (each batch's shared prefix computed once,
      attention per row), EfficientNet once per item, the channels-last detector (its batch
      norms folded in where it runs in float32), one image per detector call on CPU, and,
      where models run in float32, EfficientNet channels-last and fused and Whisper's encoder
      in PyTorch.
    """

    def __init__(self, args: argparse.Namespace):
        import copy

        import torch

        from lcoemb import OmniEncoder
        from lcoemb.mini.reader import TextReader, load_text_reader
        from lcoemb.mini.towers import load_audio_tower, load_efficientnet_lite0, load_image_tower

        self.args = args
        self.torch = torch
        self.encoder = OmniEncoder.from_pretrained("lco-mini", device="cpu", dtype=args.mini_dtype)
        self.backbone = self.encoder.backbone
        fast, shipped = load_text_reader(), load_text_reader(fused=False)
        plain = copy.deepcopy(shipped.detector).to(memory_format=torch.contiguous_format)
        self.readers = {"plain": TextReader(plain, fast.recognizer, batch_size=8), "fast": fast}
        self.audio_tower = load_audio_tower()
        self.whisper = {"plain": None, "fast": self.audio_tower.encoder}
        self.image_tower = load_image_tower()
        self.efficientnet = {"plain": load_efficientnet_lite0(), "fast": self.image_tower.model}
        #: the same model in --mini-compare-dtype, on the fast path with the fast reader
        self.other = None
        if args.mini_compare_dtype:
            self.other = OmniEncoder.from_pretrained(
                "lco-mini", device="cpu", dtype=args.mini_compare_dtype
            )
            self.other.backbone.text_reader = fast
        #: each set's plain vectors, what the opt-in levers are compared with
        self.reference: dict[str, np.ndarray] = {}

    def use(self, path: str) -> None:
        self.backbone.fast_text_path = self.backbone.batch_invariant = path == "fast"
        self.backbone.text_reader = self.readers[path]
        self.audio_tower.encoder = self.whisper[path]
        self.image_tower.model = self.efficientnet[path]

    def timed(
        self, items: list[Any], batch_size: int | None = None, encoder: Any = None
    ) -> tuple[np.ndarray, float, float | None]:
        """One encode on the path as set now (or with ``encoder``, another loaded copy):
        vectors, seconds, other processes' CPU share."""
        encoder = encoder or self.encoder
        with OtherLoad() as load:
            start = time.perf_counter()
            out = encoder.encode(items, batch_size=batch_size or self.args.batch_size)
            elapsed = time.perf_counter() - start
        return out, elapsed, load.share

    def run(self, path: str, items: list[Any], batch_size: int | None = None):
        self.use(path)
        return self.timed(items, batch_size)

    def items(self, name: str) -> list[Any]:
        """Seeded test-split items of LCO-Mini's own generators (the sets it was trained on)."""
        from lcoemb import Audio, Video, synthetic

        a = self.args
        if name == "text":  # scene captions: ~45 tokens once templated
            return [synthetic.scene(a.seed + i, "test").text for i in range(a.n_text)]
        if name == "image-text":  # rendered words: the reader finds and reads them
            return [synthetic.ocr(a.seed + i, "test").image for i in range(a.n_images)]
        if name == "image-plain":  # shapes on a background: the detector finds nothing
            return [synthetic.scene(a.seed + i, "test").image for i in range(a.n_images)]
        if name == "audio":  # espeak-ng speech, 1-3 s
            speech = (synthetic.speech(a.seed + i, "test") for i in range(a.n_audio))
            return [Audio(x.wave, sampling_rate=x.sampling_rate) for x in speech]
        clips = (synthetic.clip(a.seed + i, "test") for i in range(a.n_video))
        return [Video(x.frames) for x in clips]  # 8 frames of moving shapes

    def run_set(self, name: str) -> dict[str, str]:
        a = self.args
        items = self.items(name)
        self.run("plain", items[: a.batch_size])  # warm-up: towers loaded, kernels chosen
        self.run("fast", items[: a.batch_size])
        runs = {path: functools.partial(self.run, path, items) for path in ("plain", "fast")}
        best, vecs = best_of(runs, a.repeats, a.retries)
        (plain_s, plain_load), (fast_s, fast_load) = best["plain"], best["fast"]
        row = {
            "set": name,
            "n": str(len(items)),
            "plain items/s": f"{len(items) / plain_s:.2f}",
            "fast items/s": f"{len(items) / fast_s:.2f}",
            "speed-up": f"{plain_s / fast_s:.2f}x",
            "min cos fast vs plain": f"{min_cosine(vecs['fast'], vecs['plain']):.6f}",
        }
        if a.noise_floor:  # the plain path encoding each item alone
            single = self.run("plain", items, batch_size=1)[0]
            row["min cos fast vs plain batch 1"] = f"{min_cosine(vecs['fast'], single):.6f}"
            row["min cos plain vs plain batch 1"] = f"{min_cosine(vecs['plain'], single):.6f}"
        note = load_note([plain_load, fast_load], "plain / fast")
        print(f"  {name}: {note}", file=sys.stderr)
        row["other load plain / fast"] = (
            "-" if None in (plain_load, fast_load) else f"{plain_load:.0%} / {fast_load:.0%}"
        )
        self.reference[name] = vecs["plain"]
        return row

    def opt_in_rows(self, sets: list[str]) -> list[dict[str, str]]:
        """The levers that change vectors, each on the fast path against the plain vectors of
        :meth:`run_set`: smaller detector sides and the fused detector
        (:func:`lcoemb.mini.reader.fuse_detector`) for the image sets, and the LCO adapter merged
        into the bf16 language model (what ``lcoemb merge`` writes) for text, merged last (in
        bf16, unmerging would not give the weights back)."""
        from lcoemb.devices import dtype_name
        from lcoemb.mini.reader import TextReader, load_text_reader

        fast = self.readers["fast"]
        rows = []
        for name in [s for s in sets if s.startswith("image") and s in self.reference]:
            levers = {
                f"detector at {side} px": TextReader(
                    fast.detector, fast.recognizer, detect_size=side
                )
                for side in self.args.mini_detect_sizes
            }
            if self.args.mini_fused_detector:
                levers["fused detector"] = load_text_reader(fused=True)
            for lever, reader in levers.items():
                rows.append(self.opt_in_row(name, lever, reader))
        if self.other is not None:
            dtype = dtype_name(self.other.dtype)
            for name in [s for s in sets if s in self.reference]:
                rows.append(self.opt_in_row(name, f"in {dtype}", encoder=self.other))
        if self.args.mini_merged and "text" in self.reference:
            self.use("fast")
            self.encoder.peft_model.merge_adapter()
            rows.append(self.opt_in_row("text", "LoRA merged into bf16"))
        return rows

    def opt_in_row(
        self, name: str, lever: str, reader: Any = None, encoder: Any = None
    ) -> dict[str, str]:
        """``name``'s items with the lever: a reading tower ``reader`` or another loaded copy
        of the model, ``encoder``, timed interleaved with the fast path's own, or (neither)
        whatever is set up now, timed alone."""
        a = self.args
        items = self.items(name)

        def with_reader(chosen: Any) -> tuple[np.ndarray, float, float | None]:
            self.use("fast")
            self.backbone.text_reader = chosen
            return self.timed(items)

        if encoder is not None:
            self.use("fast")
            runs = {
                "fast": functools.partial(self.timed, items),
                "lever": functools.partial(self.timed, items, encoder=encoder),
            }
        elif reader is None:
            runs = {"lever": functools.partial(self.timed, items)}
        else:
            runs = {
                "fast": functools.partial(with_reader, self.readers["fast"]),
                "lever": functools.partial(with_reader, reader),
            }
        for run in runs.values():
            run()  # warm-up
        best, vecs = best_of(runs, a.repeats, a.retries)
        seconds, load = best["lever"]
        fast_s = best["fast"][0] if "fast" in best else None
        return {
            "set, lever": f"{name}, {lever}",
            "n": str(len(items)),
            "items/s": f"{len(items) / seconds:.2f}",
            "fast path items/s, same run": "-" if fast_s is None else f"{len(items) / fast_s:.2f}",
            "speed-up": "-" if fast_s is None else f"{fast_s / seconds:.2f}x",
            "min cos vs plain": f"{min_cosine(vecs['lever'], self.reference[name]):.6f}",
            "other load": "-" if load is None else f"{load:.0%}",
        }


def run_mini(args: argparse.Namespace) -> None:
    """The LCO-Mini comparison (``--lco-mini``): one table of both paths per set, then the
    opt-in levers that change vectors."""
    from lcoemb.devices import dtype_name

    bench = MiniBench(args)
    dtype = dtype_name(bench.encoder.dtype)
    print(
        f"model: lco-mini (SmolLM2-135M + EfficientNet-Lite0 + CRAFT/english_g2 reader + "
        f"Whisper tiny.en), {dtype}; batch size {args.batch_size}, sets {', '.join(args.sets)}\n"
    )
    rows = []
    for name in args.sets:
        start = time.perf_counter()
        rows.append(bench.run_set(name))
        print(f"  [{name} done in {time.perf_counter() - start:.0f} s]", file=sys.stderr)
    opt_in = bench.opt_in_rows(args.sets)
    print(f"\nload average {os.getloadavg()[0]:.2f} (other processes skew every number)\n")
    print_rows(rows)
    if opt_in:
        print("\nopt-in levers (change vectors), on the fast path:\n")
        print_rows(opt_in)


def print_table(results: list[SetResult], roofline: float) -> None:
    header = (
        "set",
        "n",
        "wrapper items/s",
        "lcoemb items/s",
        "ratio",
        "min cos",
        "wrapper GFLOP/s (% roofline)",
        "lcoemb GFLOP/s (% roofline)",
        "lcoemb executed GFLOP/s (%)",
        "padding wrapper/lcoemb",
    )
    rows = []
    for r in results:

        def gf(gflop: float | None, seconds: float) -> str:
            if gflop is None:
                return "-"
            rate = gflop / seconds
            return f"{rate:.0f} ({rate / roofline:.0%})"

        rows.append(
            (
                r.name,
                str(r.n),
                f"{r.n / r.wrapper_s:.2f}",
                f"{r.n / r.ours_s:.2f}",
                f"{r.wrapper_s / r.ours_s:.2f}x",
                f"{r.min_cos:.6f}",
                gf(r.gflop, r.wrapper_s),
                gf(r.gflop, r.ours_s),
                gf(r.ours_executed_gflop, r.ours_s),
                f"{r.pad_wrapper:.1%} / {r.pad_ours:.1%}",
            )
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
    for r in results:
        for line in r.extra:
            print(f"  {r.name}: {line}")
        print(f"  {r.name}: wall time wrapper {r.wrapper_s:.1f} s, lcoemb {r.ours_s:.1f} s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small model and sets (< 1 min)")
    p.add_argument("--hidden-size", type=int, default=1024)
    p.add_argument("--layers", type=int, default=8, help="text decoder layers")
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--intermediate-size", type=int, default=2816)
    p.add_argument("--vision-depth", type=int, default=2)
    p.add_argument("--audio-layers", type=int, default=2)
    p.add_argument("--n-text", type=int, default=512)
    p.add_argument("--n-long", type=int, default=128, help="passages in the long set")
    p.add_argument("--n-images", type=int, default=96)
    p.add_argument("--n-audio", type=int, default=64)
    p.add_argument("--n-video", type=int, default=32, help="clips (--lco-mini only)")
    p.add_argument(
        "--batch-size",
        type=int,
        help="items per batch, the same for both paths (default: the model's own, 8 for "
        "the Qwen2.5-Omni thinker, 32 with --lco-mini)",
    )
    p.add_argument(
        "--sets",
        default=None,
        help=f"comma-separated: {','.join(SETS)} (with --lco-mini: {','.join(MINI_SETS)})",
    )
    p.add_argument(
        "--lco-mini",
        action="store_true",
        help="benchmark LCO-Mini, the embedded default: its plain path against its fast path "
        "(instead of lcoemb against mteb's wrapper on a random Qwen2.5-Omni)",
    )
    p.add_argument(
        "--mini-detect-sizes",
        default="",
        help="with --lco-mini, also time the image sets with the detector at these sides "
        "(comma-separated, e.g. 320,224; an opt-in lever that changes vectors)",
    )
    p.add_argument(
        "--mini-fused-detector",
        action="store_true",
        help="with --lco-mini, also time the image sets with the fused detector, batch norms "
        "folded into bf16 convolutions (an opt-in lever that changes vectors; on a CPU that "
        "runs the detector in float32 it is the fast path's own detector)",
    )
    p.add_argument(
        "--mini-merged",
        action="store_true",
        help="with --lco-mini, also time text with the LCO adapter merged into the bf16 LM "
        "(an opt-in lever that changes vectors)",
    )
    p.add_argument(
        "--mini-dtype",
        help="with --lco-mini, the model's dtype (default: the device's own, bfloat16 where "
        "the CPU computes it fast, else float32)",
    )
    p.add_argument(
        "--mini-compare-dtype",
        help="with --lco-mini, also time every set with a second copy of the model in this "
        "dtype (e.g. bfloat16 on a CPU without fast bf16), interleaved with the fast path",
    )
    p.add_argument(
        "--dtype",
        help="dtype of both paths of the Qwen2.5-Omni comparison and of its roofline (default: "
        "the device's own, bfloat16 where the CPU computes it fast, else float32)",
    )
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=2, help="timed runs per path; the best counts")
    p.add_argument(
        "--retries",
        type=int,
        default=3,
        help="extra runs of a path while its best run shared the CPU with other processes",
    )
    p.add_argument(
        "--init-std",
        type=float,
        default=0.02,
        help="std of the random weights (0.02 = Qwen's initializer_range)",
    )
    p.add_argument(
        "--noise-floor",
        action="store_true",
        help="also encode every set at batch size 1 with both paths and report min cosines: "
        "each path's batched vs unbatched vectors (what re-batching alone does in bf16), and "
        "the two paths at batch size 1",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.hidden_size, args.layers, args.intermediate_size = 256, 2, 704
        args.heads, args.kv_heads, args.vision_depth, args.audio_layers = 4, 2, 1, 1
        args.n_text, args.n_images, args.n_audio, args.repeats = 32, 8, 8, 1
        args.n_long = 16
        args.n_video = 8
    known = MINI_SETS if args.lco_mini else SETS
    args.sets = [s.strip() for s in (args.sets or ",".join(known)).split(",") if s.strip()]
    unknown = set(args.sets) - set(known)
    if unknown:
        p.error(f"unknown sets {sorted(unknown)}; choose from {', '.join(known)}")
    args.mini_detect_sizes = [int(x) for x in args.mini_detect_sizes.split(",") if x.strip()]
    if any(x % 32 or x < 32 for x in args.mini_detect_sizes):
        p.error("--mini-detect-sizes: each side must be a positive multiple of 32")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # progress bars off before tqdm is first imported (it reads TQDM_* at import time)
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")

    import datasets
    import mteb
    import torch
    import transformers

    import lcoemb
    from lcoemb.devices import default_dtype, dtype_name
    from lcoemb.testing import make_tiny_qwen2_5_omni_thinker

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    torch.set_num_threads(args.threads)

    print(
        f"python {platform.python_version()}, torch {torch.__version__}, transformers "
        f"{transformers.__version__}, mteb {mteb.__version__}, datasets {datasets.__version__}, "
        f"lcoemb {lcoemb.__version__}; {torch.get_num_threads()} threads, {cpu_name()}, "
        f"torch's CPU kernels {torch.backends.cpu.get_cpu_capability()}"
    )
    from lcoemb.backbones import Backbone, MiniBackbone

    if args.batch_size is None:  # the model's own default, the same for both sides
        args.batch_size = (MiniBackbone if args.lco_mini else Backbone).default_batch_size
    if args.lco_mini:
        rates = {d: matmul_roofline(d) for d in ("bfloat16", "float32")}
        print(
            "square matmul (2048, or 512 where there are no fast kernels): "
            + ", ".join(f"{d} {r:.0f} GFLOP/s" for d, r in rates.items())
            + f"; load average {os.getloadavg()[0]:.2f}"
        )
        run_mini(args)
        return
    args.dtype = args.dtype or dtype_name(default_dtype("cpu"))
    roofline = matmul_roofline(args.dtype)
    print(
        f"roofline: {args.dtype} 2048x2048 @ 2048x2048 matmul = {roofline:.0f} GFLOP/s; "
        f"load average {os.getloadavg()[0]:.2f}"
    )

    with tempfile.TemporaryDirectory(prefix="lcoemb-bench-") as tmp:
        model_dir = make_tiny_qwen2_5_omni_thinker(
            Path(tmp) / "model",
            hidden_size=args.hidden_size,
            num_hidden_layers=args.layers,
            num_attention_heads=args.heads,
            num_key_value_heads=args.kv_heads,
            intermediate_size=args.intermediate_size,
            vision_depth=args.vision_depth,
            audio_layers=args.audio_layers,
            max_pixels=QWEN_OMNI_MAX_PIXELS,
            dtype=torch.bfloat16,
            init_std=args.init_std,
        )
        bench = Bench(args, model_dir)
        towers = {
            name: sum(p.numel() for p in module.parameters()) / 1e6
            for name, module in bench.ours.backbone.model.model.named_children()
        }
        print(
            f"model: random Qwen2.5-Omni thinker, text {args.hidden_size} wide x {args.layers} "
            f"layers ({args.heads}/{args.kv_heads} heads, MLP {args.intermediate_size}), "
            f"{bench.text_params / 1e6:.1f} M non-embedding text params; towers (M params): "
            + ", ".join(f"{k} {v:.1f}" for k, v in towers.items())
        )
        print(f"{args.dtype}, batch size {args.batch_size}, sets {', '.join(args.sets)}\n")
        results = []
        for name in args.sets:
            start = time.perf_counter()
            results.append(bench.run_set(name))
            print(f"  [{name} done in {time.perf_counter() - start:.0f} s]", file=sys.stderr)
    after = matmul_roofline(args.dtype)
    print(
        f"\nroofline again after the run: {after:.0f} GFLOP/s; load average "
        f"{os.getloadavg()[0]:.2f} (other processes on the machine skew every number)\n"
    )
    print_table(results, max(roofline, after))


if __name__ == "__main__":
    main()
