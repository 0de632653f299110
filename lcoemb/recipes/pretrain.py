"""Stage 1 of LCO-Mini (``lcoemb mini pretrain``): generative pretraining of the projectors, the
source of the implicit cross-modal alignment that text-only contrastive training later unlocks.

Next-token loss on the generation tasks of :data:`lcoemb.synthetic.TASKS`: captioning scenes,
reading rendered text (OCR), naming digits, transcribing espeak-ng speech (ASR) and describing
clips of moving objects, each asked with its task's instruction. The towers stay frozen and the
projectors learn, so the frozen tower features are computed once and cached
(:func:`build_examples`). The LM stays frozen too, unless ``lm_lora_r`` puts a LoRA on it: a
135M LM with frozen weights tends to paraphrase around media tokens rather than use them, and a
small LoRA lets it learn to (its factors are saved beside the projectors and merged into the LM
when the model loads). While the LM is frozen, the chat template's fixed prefix, the same for
every example, is computed once (:class:`PrefixCache`). At the end the held-out generation scores of
:func:`lcoemb.evaluation.generation.generation_scores` go into ``pretrain_report.json``
(``eval_size`` samples per task; 0 skips them).
"""

from __future__ import annotations

import copy
import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import PIL.Image
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from lcoemb.backbones.mini import MiniBackbone
from lcoemb.config import PROJECTOR_NAMES, PretrainConfig
from lcoemb.devices import default_dtype
from lcoemb.encoder import OmniEncoder
from lcoemb.evaluation.generation import generation_scores
from lcoemb.inputs import LoadedItem
from lcoemb.mini.model import (
    CONFIG_NAME,
    LM_LORA_NAME,
    MARKERS,
    WEIGHTS_NAME,
    LCOMini,
    LCOMiniConfig,
    load_smollm2,
)
from lcoemb.mini.reader import READ_HIDDEN, load_text_reader
from lcoemb.mini.silhouettes import SHAPE_FEATURES
from lcoemb.mini.towers import load_audio_tower, load_image_tower
from lcoemb.synthetic import DATA_VERSION, TASKS, dataset
from lcoemb.synthetic.corpus import corpus_fingerprint
from lcoemb.training.checkpoints import (
    clean_partial,
    latest_checkpoint,
    load_torch,
    open_log,
    prune,
    read_state,
    save_checkpoint,
)


@dataclass
class Example:
    """One stage-1 example: a task's frozen tower features and the text to generate."""

    task: str
    features: torch.Tensor  # frozen tower output: (9, 1280), (frames, 9, 1280) or (T, 384)
    target: str
    reading: torch.Tensor | None = None  # an image's reading tokens (n, 256)
    transcript: torch.Tensor | None = None  # a clip's transcript as LM token ids (n,)
    #: per-cell extras, the colour histograms then the shape descriptors the model takes:
    #: (9, width) or (frames, 9, width)
    cells: torch.Tensor | None = None


def tower_features(
    backbone: Any, modality: str, samples: list[Any], parts: tuple[str, ...], desc: str
) -> dict[str, list[torch.Tensor]]:
    """Frozen tower outputs for samples, computed once (towers never change in stage 1), by
    part: ``"features"`` (the modality's tower), ``"read"`` (images' reading tokens),
    ``"colour"`` (images' and frames' colour histograms, at the model's bins), ``"shape"``
    (their cells' shape descriptors) and
    ``"transcript"`` (clips' transcripts as LM token ids; Whisper's decoder reads the encoder
    states the features come from, so asking for both runs the encoder once)."""
    bins = backbone.model.mini_config.image_colour_bins if "colour" in parts else 0
    out: dict[str, list[torch.Tensor]] = {part: [] for part in parts}
    batch = 32
    for s in tqdm(range(0, len(samples), batch), desc=desc, unit="batch"):
        chunk = samples[s : s + batch]
        if modality == "audio":
            waves = [x.wave for x in chunk]
            if "transcript" in parts:
                feats, texts = load_audio_tower().listen(waves)
                out["transcript"] += backbone.transcript_ids(texts)
            else:
                feats = load_audio_tower()(waves)
            if "features" in parts:
                out["features"] += [f.to(torch.bfloat16) for f in feats]
        elif modality == "image":
            images = [x.image for x in chunk]
            if "features" in parts:
                out["features"] += list(load_image_tower()(images).to(torch.bfloat16))
            if "read" in parts:
                out["read"] += [t.to(torch.bfloat16) for t in load_text_reader()(images)]
            if "colour" in parts:
                out["colour"] += list(load_image_tower().colours(images, bins).to(torch.bfloat16))
            if "shape" in parts:
                out["shape"] += list(load_image_tower().shapes(images))
        else:
            for x in chunk:
                frames = [_pil(x.frames[i]) for i in backbone.model.frame_indices(len(x.frames))]
                if "features" in parts:
                    out["features"].append(load_image_tower()(frames).to(torch.bfloat16))
                if "colour" in parts:
                    colours = load_image_tower().colours(frames, bins)
                    out["colour"].append(colours.to(torch.bfloat16))
                if "shape" in parts:
                    out["shape"].append(load_image_tower().shapes(frames))
    return out


def _pil(frame: Any) -> Any:
    return frame if isinstance(frame, PIL.Image.Image) else PIL.Image.fromarray(frame)


def _cache_path(cache_dir: Path, task: str, part: str, n: int, bins: int) -> Path:
    version = DATA_VERSION + (f"-{corpus_fingerprint()}" if TASKS[task].corpus else "")
    kind = task if part == "features" else f"{task}-{part}"
    if part == "colour":
        kind += str(bins)
    if part == "shape":
        kind += str(SHAPE_FEATURES)
    return cache_dir / f"{kind}-v{version}-n{n}.safetensors"


def cached_features(
    backbone: Any, task: str, samples: list[Any], cache_dir: Path | None, parts: tuple[str, ...]
) -> dict[str, list[torch.Tensor]]:
    """Tower outputs of ``samples`` by part (see :func:`tower_features`), each read from
    ``cache_dir`` when an earlier run computed it (the key names the data version, task, part and
    count, and for corpus tasks the corpus fingerprint, so a changed generator or corpus is never
    reused); the parts not cached are computed together. A transcript is cached as the ids of
    the LM's tokenizer, uncapped: the cap applies when the model embeds it."""
    bins = backbone.model.mini_config.image_colour_bins if "colour" in parts else 0
    paths = (
        {}
        if cache_dir is None
        else {p: _cache_path(cache_dir, task, p, len(samples), bins) for p in parts}
    )
    found: dict[str, list[torch.Tensor]] = {}
    for part, path in paths.items():
        if path.is_file():
            stored = load_file(str(path))
            found[part] = [stored[str(i)] for i in range(len(samples))]
    missing = tuple(part for part in parts if part not in found)
    if not missing:
        return found
    computed = tower_features(
        backbone, TASKS[task].modality, samples, missing, desc=f"{task} {', '.join(missing)}"
    )
    for part, outputs in computed.items():
        if part in paths:
            paths[part].parent.mkdir(parents=True, exist_ok=True)
            tmp = paths[part].with_suffix(".tmp")
            save_file({str(i): f.contiguous() for i, f in enumerate(outputs)}, str(tmp))
            tmp.replace(paths[part])
    return found | computed


def build_examples(backbone: Any, config: PretrainConfig) -> list[Example]:
    """The training examples of every task ``config`` draws from (``task_weights`` > 0):
    ``train_size`` generated samples each, as cached tower features (and reading tokens for
    images when the model reads, transcripts for clips when it transcribes)."""
    cache_dir = Path(config.cache_dir) if config.cache_dir else None
    examples: list[Example] = []
    for task, n in config.train_size.items():
        if not config.task_weights.get(task):
            continue  # never drawn: no features to compute
        samples = dataset(task, "train", n)
        modality = TASKS[task].modality
        parts = ("features",)
        if modality == "image" and backbone.model.reads:
            parts += ("read",)
        if modality == "audio" and backbone.model.transcribes:
            parts += ("transcript",)
        extras: tuple[str, ...] = ()
        if modality in ("image", "video"):
            model = backbone.model
            extras = ("colour",) * model.sees_colour + ("shape",) * model.sees_shape
        got = cached_features(backbone, task, samples, cache_dir, parts + extras)
        none: list[Any] = [None] * len(samples)
        cells = (
            [torch.cat([got[part][i].float() for part in extras], -1) for i in range(len(samples))]
            if extras
            else none
        )
        examples += [
            Example(task, f, s.text, r, t, c)
            for f, s, r, t, c in zip(
                got["features"],
                samples,
                got.get("read", none),
                got.get("transcript", none),
                cells,
            )
        ]
    return examples


def _blinded(example: Example, rng: random.Random, p: float) -> Example:
    """``example`` with, at probability ``p`` for an image or video example that has per-cell
    extras, its EfficientNet features zeroed: modality dropout, so that the projectors learn to
    describe a picture from its colour and shape extras alone. On the training styles
    EfficientNet already names the shape, so without it nothing makes the model use the extras,
    which are what carries over to other renderings."""
    if example.cells is None or TASKS[example.task].modality not in ("image", "video"):
        return example
    if rng.random() >= p:
        return example
    return replace(example, features=torch.zeros_like(example.features))


def media_embedding(model: Any, modality: str, example: Example) -> torch.Tensor:
    """The LM input embeddings of an example's media (its projected tower features)."""
    features = example.features.float()
    if modality == "audio":
        return model.embed_audio(features, example.transcript)
    if modality == "video":
        return model.embed_image_features(features, example.cells).flatten(0, 1)
    reading = example.reading.float() if example.reading is not None else None
    return model.embed_image(features, reading, example.cells)


class PrefixCache:
    """Keys and values of the chat template's fixed prefix (system turn + ``<|im_start|>user``).

    Every stage-1 example starts with the same tokens, and the LM is frozen, so their keys and
    values never change: computing them once halves the cost of a step. (With LoRA on the LM, as
    in the contrastive stage, they would have to be recomputed every step.)
    """

    def __init__(self, backbone: Any):
        tok = backbone.tokenizer
        text = tok.apply_chat_template(
            [{"role": "user", "content": MARKERS["image"]}],
            tokenize=False,
            add_generation_prompt=True,
        )
        prefix = text.split(MARKERS["image"])[0]
        ids = tok(prefix, add_special_tokens=False, return_tensors="pt").input_ids
        with torch.no_grad():
            out = backbone.model.lm(input_ids=ids.to(backbone.device), use_cache=True)
        self.length = ids.shape[1]
        self.cache = out.cache

    def expanded(self, batch: int) -> Any:
        """A copy of the prefix's cache for ``batch`` sequences."""
        cache = copy.deepcopy(self.cache)
        cache.batch_repeat_interleave(batch)
        return cache


def batch_loss(backbone: Any, examples: list[Example], prefix: PrefixCache | None) -> torch.Tensor:
    """Mean next-token loss on the targets (prompt tokens are not scored); the shared prefix
    comes from ``prefix`` (None: every sequence is computed whole, as it must be while the LM
    itself learns), the rest of each sequence is right-padded."""
    model, tok = backbone.model, backbone.tokenizer
    embed = model.input_embeddings
    skip = prefix.length if prefix is not None else 0
    seqs, labels = [], []
    for ex in examples:
        task = TASKS[ex.task]
        item = LoadedItem([(task.modality, None)])
        text = backbone.prompt(item, suffix="\n" + task.instruction)
        prompt = backbone.embed_prompt(text, [media_embedding(model, task.modality, ex)])
        prompt = prompt[skip:]
        target = tok(ex.target + tok.eos_token, add_special_tokens=False).input_ids
        target_ids = torch.tensor(target, device=prompt.device)
        seqs.append(torch.cat([prompt, embed(target_ids)]))
        labels.append(torch.cat([torch.full((len(prompt),), -100), target_ids.cpu()]))
    length = max(len(s) for s in seqs)
    d = seqs[0].shape[-1]
    inputs = seqs[0].new_zeros(len(seqs), length, d)
    mask = torch.zeros(len(seqs), skip + length, dtype=torch.long)
    mask[:, :skip] = 1
    lab = torch.full((len(seqs), length), -100)
    for i, (s, y) in enumerate(zip(seqs, labels)):
        inputs[i, : len(s)] = s
        mask[i, skip : skip + len(s)] = 1
        lab[i, : len(y)] = y
    cache = {} if prefix is None else {"cache": prefix.expanded(len(seqs)), "use_cache": True}
    out = model.lm(
        inputs_embeds=inputs,
        attention_mask=mask.to(inputs.device),
        labels=lab.to(inputs.device),
        **cache,
    )
    return out.loss


# ----------------------------------------------------------------------------- the loop

STATE_WEIGHTS = "state.pt"


def save_state(
    out: Path, step: int, model: Any, optimizer: Any, scheduler: Any, rng: Any, keep: int | None
) -> None:
    """An atomic checkpoint under ``out/checkpoints`` of everything the loop needs to continue
    exactly at ``step``; only the newest ``keep`` checkpoints stay."""
    version, internal, gauss = rng.getstate()

    def write(folder: Path) -> None:
        state = {
            "projectors": model.projector_state_dict(),
            "lm_lora": model.lm_lora_state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }
        torch.save(state, folder / STATE_WEIGHTS)
        model.mini_config.save(folder)  # so that a checkpoint exports on its own

    sampler = {"version": version, "internal": list(internal), "gauss": gauss}
    save_checkpoint(out / "checkpoints", step, {"step": step, "sampler": sampler}, write)
    prune(out / "checkpoints", keep)


def resume_state(out: Path, model: Any, optimizer: Any, scheduler: Any, rng: Any) -> int:
    """Restore the newest complete checkpoint under ``out/checkpoints`` into the model, optimiser,
    schedule and sampler; return its step (0 when there is none)."""
    clean_partial(out / "checkpoints")
    checkpoint = latest_checkpoint(out / "checkpoints")
    if checkpoint is None:
        return 0
    meta = read_state(checkpoint)
    state = load_torch(checkpoint / STATE_WEIGHTS)  # tensors only: unpickling can run code
    model.load_state_dict(state["projectors"], strict=False)
    model.load_state_dict(state.get("lm_lora", {}), strict=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    sampler = meta["sampler"]
    rng.setstate((sampler["version"], tuple(sampler["internal"]), sampler["gauss"]))
    return int(meta["step"])


def export_checkpoint(checkpoint: str | Path, output: str | Path) -> Path:
    """A stage-1 checkpoint (``OUTPUT/checkpoints/step-N``) as a model folder that every command
    takes as ``--model``: its ``config.json`` plus its projectors in bf16.
    Checkpoints along one run are LCO-Mini variants with smaller generative budgets (GRSL)."""
    checkpoint, out = Path(checkpoint), Path(output)
    config = checkpoint / CONFIG_NAME
    if not (checkpoint / STATE_WEIGHTS).is_file() or not config.is_file():
        raise FileNotFoundError(
            f"{checkpoint} is not a stage-1 checkpoint ({STATE_WEIGHTS} and {CONFIG_NAME} expected)"
        )
    state = load_torch(checkpoint / STATE_WEIGHTS)  # tensors only: unpickling can run code
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(config, out / CONFIG_NAME)
    weights = {k: v.to(torch.bfloat16).contiguous() for k, v in state["projectors"].items()}
    save_file(weights, str(out / WEIGHTS_NAME))
    if state.get("lm_lora"):
        save_file({k: v.contiguous() for k, v in state["lm_lora"].items()}, str(out / LM_LORA_NAME))
    return out


def _stage1_backbone(
    config: PretrainConfig, base: str | None, out: Path
) -> tuple[MiniBackbone, list[torch.nn.Parameter]]:
    """A fresh LCO-Mini (or ``base``) with only ``config.train``'s projectors trainable, and the
    parameters of the LM LoRA ``config.lm_lora_r`` asks for (empty for none); with
    ``config.transcript_tokens`` set, the model transcribes clips as it says."""
    if config.bf16 is None:  # stage 1 runs on the CPU: bf16 only where it is fast there
        lm_dtype = default_dtype("cpu")
    else:
        lm_dtype = torch.bfloat16 if config.bf16 else torch.float32
    if base is None:
        lm, tok = load_smollm2(lm_dtype)
        mini_config = LCOMiniConfig(read_feature_size=READ_HIDDEN if config.reading else 0)
        backbone = MiniBackbone(LCOMini(mini_config, lm), tok, str(out))
    else:
        backbone = MiniBackbone.from_pretrained(base, device="cpu", dtype=lm_dtype)
        if config.reading:
            backbone.model.add_reading(READ_HIDDEN)
    model = backbone.model
    if config.colour_bins and not model.sees_colour:
        model.add_colour(config.colour_bins)
    if config.shapes:
        model.add_shape()
    if config.transcript_tokens is not None:
        model.mini_config.transcript_tokens = config.transcript_tokens
    unknown = sorted(set(config.train) - set(PROJECTOR_NAMES))
    if unknown:
        raise ValueError(f"unknown projectors to train: {unknown}; choose from {PROJECTOR_NAMES}")
    for name in PROJECTOR_NAMES:
        projector = getattr(model, f"{name}_projector", None)
        if projector is not None:
            projector.requires_grad_(name in config.train)
    lora_params: list[torch.nn.Parameter] = []
    if config.lm_lora_r:
        loaded = model.mini_config
        if loaded.language_model_lora or loaded.language_model_weights:
            raise ValueError(
                f"{base} already changes its LM (a stage-1 LoRA or merged layers); train a new "
                "LM LoRA from scratch (no --base) or continue with --lm-lora-r 0"
            )
        lora_params = model.add_lm_lora(config.lm_lora_r, 2 * config.lm_lora_r, config.seed)
    # short sequences: eager attention's backward beats the CPU flash kernel's (2.2 s vs 2.6 s
    # per step of 16 examples, measured)
    model.lm.set_attn_implementation("eager")
    return backbone, lora_params


def _schedule(optimizer: Any, config: PretrainConfig) -> Any:
    """Linear warm-up, then cosine decay to 0 at ``config.steps``: a constant rate wanders."""

    def lr_at(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)


def pretrain(config: PretrainConfig, base: str | None = None) -> dict[str, Any]:
    """Train the projectors from scratch (or continue from ``base``) and write the folder:
    ``projectors.safetensors`` and ``config.json``, ``checkpoints/``, ``pretrain_log.jsonl`` and
    ``pretrain_report.json`` (timings and held-out generation scores)."""
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    t_start = time.perf_counter()
    backbone, lora_params = _stage1_backbone(config, base, out)
    model = backbone.model
    t0 = time.perf_counter()
    examples = build_examples(backbone, config)
    feature_seconds = time.perf_counter() - t0
    by_task: dict[str, list[Example]] = {}
    for ex in examples:
        by_task.setdefault(ex.task, []).append(ex)
    tasks = list(by_task)
    weights = [config.task_weights.get(t, 0.0) for t in tasks]

    lora_ids = {id(p) for p in lora_params}
    projector_params = [p for p in model.parameters() if p.requires_grad and id(p) not in lora_ids]
    params = projector_params + lora_params
    groups = [{"params": projector_params, "lr": config.lr}]
    if lora_params:
        groups.append({"params": lora_params, "lr": config.lm_lora_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    scheduler = _schedule(optimizer, config)
    rng = random.Random(config.seed)
    start = resume_state(out, model, optimizer, scheduler, rng) if config.resume else 0
    if start:
        print(f"resuming stage 1 at step {start} of {config.steps}")
    model.train()
    # the prefix's keys and values stay fixed only while the LM does
    prefix = None if lora_params else PrefixCache(backbone)
    log = open_log(out / "pretrain_log.jsonl", start)
    t0 = time.perf_counter()
    bar = tqdm(
        range(start, config.steps),
        desc="Stage-1 pretraining",
        unit="step",
        initial=start,
        total=config.steps,
    )
    for step in bar:
        batch = [
            rng.choice(by_task[rng.choices(tasks, weights)[0]]) for _ in range(config.batch_size)
        ]
        if config.image_feature_dropout:
            batch = [_blinded(ex, rng, config.image_feature_dropout) for ex in batch]
        loss = batch_loss(backbone, batch, prefix)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if (step + 1) % config.log_steps == 0:
            log.write(
                json.dumps(
                    {"step": step + 1, "loss": loss.item(), "lr": scheduler.get_last_lr()[0]}
                )
                + "\n"
            )
            log.flush()
        if (step + 1) % config.save_steps == 0 or step + 1 == config.steps:
            save_state(out, step + 1, model, optimizer, scheduler, rng, config.keep_checkpoints)
    log.close()
    train_seconds = time.perf_counter() - t0
    model.eval()
    model.lm.set_attn_implementation("sdpa")
    backbone.save_pretrained(out)  # projectors, and the LM LoRA's factors if there is one
    if lora_params:
        model.merge_lm_lora()  # as the saved model loads: generation is scored on that

    encoder = OmniEncoder(backbone)
    t0 = time.perf_counter()
    scores = generation_scores(encoder, config.eval_size) if config.eval_size else {}
    report = {
        "config": asdict(config),
        "base": base,  # None: from scratch; else the model this run continued
        "seconds": {
            "features": feature_seconds,
            "training": train_seconds,
            "evaluation": time.perf_counter() - t0,
            "total": time.perf_counter() - t_start,
        },
        "machine": f"{torch.get_num_threads()} threads, torch {torch.__version__}",
        "scores": scores,
    }
    (out / "pretrain_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
