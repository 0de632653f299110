"""Text-only LoRA contrastive training (the LCO-EMB recipe) on accelerate.

One step = one global batch of triplets. Each process embeds its slice with GradCache (chunks of
``mini_batch_size``), the InfoNCE loss gathers embeddings from all processes so every anchor sees
the global batch of positives and hard negatives, and the LoRA gradients are averaged across
processes once per step. Everything that decides a step's result (its data, its dropout masks)
is a function of the step number, so a resumed run repeats exactly what an uninterrupted one
would have done.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from lcoemb.backbones.base import fast_bf16
from lcoemb.training import checkpoints as ckpt
from lcoemb.training.config import TrainConfig
from lcoemb.training.data import (
    Triplet,
    TripletSet,
    collate_triplets,
    load_triplets,
    mix_sources,
    parse_mix_arg,
    to_encoder_item,
)
from lcoemb.training.gradcache import grad_cache_step
from lcoemb.training.losses import InfoNCELoss, MatryoshkaLoss

ADAPTER_DIR = "adapter"
LOG_FILE = "log.jsonl"


@dataclass
class TrainResult:
    output: Path
    adapter: Path
    steps: int
    final_loss: float
    skipped: int


def load_training_data(config: TrainConfig) -> tuple[list[Triplet], list[TripletSet]]:
    """Read every source; mix by ratio when ``mix`` is given, else concatenate ``data``."""
    if config.mix:
        parsed = [parse_mix_arg(m) for m in config.mix]
        sets = [load_triplets(src, skip_bad=config.skip_bad) for src, _ in parsed]
        triplets = mix_sources([(s, w) for s, (_, w) in zip(sets, parsed)], seed=config.seed)
    elif config.data:
        sets = [load_triplets(src, skip_bad=config.skip_bad) for src in config.data]
        triplets = [t for s in sets for t in s.triplets]
    else:
        raise ValueError("no training data: give data sources (--data) or --mix SOURCE:WEIGHT")
    return triplets, sets


def _step_indices(step: int, n: int, batch: int, steps_per_epoch: int, seed: int) -> list[int]:
    """The global batch of ``step``: epoch ``e`` is a seeded permutation of all triplets."""
    epoch, within = divmod(step, steps_per_epoch)
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=gen)
    return order[within * batch : (within + 1) * batch].tolist()


def _key(item: Any) -> str:
    """A hashable identity for duplicate masking: the text, or the media path(s)."""
    if isinstance(item, str):
        return item
    if isinstance(item, list):
        return "\x1f".join(_key(p) for p in item)
    source = getattr(item, "source", None) or getattr(item, "filename", None)
    return repr(source if source is not None else id(item))


def _engine_backward(engine: Any) -> Any:
    """GradCache's chunk backward through a DeepSpeed engine: accumulate, no GAS rescaling."""

    def backward(loss: torch.Tensor) -> None:
        engine.backward(loss, scale_wrt_gas=False)

    return backward


class Trainer:
    """Builds the LoRA model, the optimiser and the loss from a :class:`TrainConfig`, and runs
    the loop with checkpoints, logs and resume."""

    def __init__(self, config: TrainConfig):
        from accelerate import Accelerator

        from lcoemb.mini.registry import resolve

        embedded = resolve(config.model)
        if embedded is not None and embedded[1] is not None:
            raise ValueError(
                f"{config.model!r} already carries its LCO adapter; train from its base "
                "(lco-mini-base) instead"
            )
        self.config = config
        cpu = config.device == "cpu" or (config.device is None and not torch.cuda.is_available())
        self.accelerator = Accelerator(cpu=cpu)
        self.output = Path(config.output)
        self.checkpoints_dir = self.output / "checkpoints"

    # ------------------------------------------------------------------ setup

    def _bf16(self) -> bool:
        """Whether to compute in bf16: asked for, or ``auto`` on a device with fast bf16."""
        precision = self.config.precision
        if precision != "auto":
            return precision == "bf16"
        return fast_bf16(self.accelerator.device)

    def _dtype(self) -> torch.dtype:
        """The frozen base weights' dtype: bf16 when computing in bf16, on every device.

        The LoRA weights stay float32 whatever the base (peft upcasts them), so the optimiser
        state is float32. A float32 base under CPU autocast would be re-cast to bf16 in every
        forward and backward (autocast caches casts of trainable leaves only); storing it in
        bf16 computes the same products without that traffic and halves the model's memory.
        """
        return torch.bfloat16 if self._bf16() else torch.float32

    def _cpu_bf16(self) -> bool:
        return self.accelerator.device.type == "cpu" and self._bf16()

    def autocast(self) -> Any:
        """bf16 autocast on CPU: the float32 LoRA matmuls then run in bf16 as they do natively
        on accelerators (gradient checkpointing replays the same autocast state)."""
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self._cpu_bf16())

    def build_model(self) -> Any:
        from peft import LoraConfig, get_peft_model
        from peft.tuners.tuners_utils import BaseTunerLayer

        from lcoemb.encoder import OmniEncoder

        cfg = self.config
        encoder = OmniEncoder.from_pretrained(
            cfg.model, device=self.accelerator.device, dtype=self._dtype()
        )
        backbone = encoder.backbone
        lora = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=backbone.lora_target_modules(),
            bias="none",
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)  # the same LoRA init on every process and every run
            encoder.peft_model = get_peft_model(backbone.model, lora)
        if self._cpu_bf16():  # the model then runs under :meth:`autocast` only
            backbone.use_float32_attention()
            # peft casts each LoRA layer's input to the float32 LoRA weights, a copy autocast
            # at once undoes; set per layer (not a context) so checkpoint replays agree
            for module in encoder.peft_model.modules():
                if isinstance(module, BaseTunerLayer):
                    module.cast_input_dtype_enabled = False
        if cfg.gradient_checkpointing:
            backbone.enable_gradient_checkpointing()
        encoder.peft_model.train()
        return encoder

    def build_loss(self) -> torch.nn.Module:
        cfg = self.config
        loss: torch.nn.Module = InfoNCELoss(
            temperature=cfg.temperature,
            bidirectional=cfg.bidirectional,
            mask_duplicates=cfg.mask_duplicates,
        )
        if cfg.matryoshka_dims:
            loss = MatryoshkaLoss(loss, cfg.matryoshka_dims)
        return loss

    # ------------------------------------------------------------------ checkpoints

    def _state(self, step: int, loss: float, n_triplets: int) -> dict[str, Any]:
        cfg = self.config
        return {
            "step": step,
            "loss": loss,
            "n_triplets": n_triplets,
            "world_size": self.accelerator.num_processes,
            "config": cfg.to_dict(),
        }

    def _save(
        self, encoder: Any, optimizer: Any, scheduler: Any, state: dict[str, Any], engine: Any
    ) -> None:
        acc = self.accelerator
        staged = None
        if engine is not None:  # every process writes its ZeRO partition, then one renames
            from lcoemb.training import zero

            staged = self.checkpoints_dir / f".tmp-step-{state['step']}-deepspeed"
            if acc.is_main_process:
                shutil.rmtree(staged, ignore_errors=True)
                staged.mkdir(parents=True)
            acc.wait_for_everyone()
            zero.save(engine, staged)
            acc.wait_for_everyone()

        def write(folder: Path) -> None:
            encoder.peft_model.save_pretrained(folder / ADAPTER_DIR)
            if staged is not None:
                shutil.move(staged / zero.CHECKPOINT_TAG, folder / zero.CHECKPOINT_TAG)
                return
            torch.save(
                {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                folder / "optimizer.pt",
            )

        if acc.is_main_process:
            ckpt.save_checkpoint(self.checkpoints_dir, state["step"], state, write)
            ckpt.prune(self.checkpoints_dir, self.config.keep_checkpoints)
            if staged is not None:
                shutil.rmtree(staged, ignore_errors=True)
        acc.wait_for_everyone()

    def _resume(
        self, encoder: Any, optimizer: Any, scheduler: Any, n_triplets: int, engine: Any
    ) -> int:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        ckpt.clean_partial(self.checkpoints_dir) if self.accelerator.is_main_process else None
        self.accelerator.wait_for_everyone()
        latest = ckpt.latest_checkpoint(self.checkpoints_dir)
        if latest is None:
            return 0
        state = ckpt.read_state(latest)
        old, new = state["config"], self.config.to_dict()
        must_match = ["model", "batch_size", "seed", "lora_r", "lora_alpha", "lr", "warmup_steps"]
        must_match.append("deepspeed")
        changed = [k for k in must_match if old.get(k) != new.get(k)]
        if state["n_triplets"] != n_triplets:
            changed.append(f"data ({state['n_triplets']} -> {n_triplets} triplets)")
        if state["world_size"] != self.accelerator.num_processes:
            changed.append("number of processes")
        if changed:
            raise ValueError(
                f"cannot resume from {latest}: settings changed since it was written: "
                f"{', '.join(changed)}"
            )
        if engine is not None:  # the engine's checkpoint holds LoRA weights and optimiser shards
            from lcoemb.training import zero

            zero.load(engine, latest)
            return int(state["step"])
        weights = load_file(str(latest / ADAPTER_DIR / "adapter_model.safetensors"))
        set_peft_model_state_dict(encoder.peft_model, weights)
        opt = torch.load(latest / "optimizer.pt", map_location="cpu", weights_only=False)
        optimizer.load_state_dict(opt["optimizer"])
        scheduler.load_state_dict(opt["scheduler"])
        return int(state["step"])

    # ------------------------------------------------------------------ logging

    # ------------------------------------------------------------------ the loop

    def train(self) -> TrainResult:
        cfg = self.config
        acc = self.accelerator
        world, rank = acc.num_processes, acc.process_index
        if cfg.batch_size % world:
            raise ValueError(f"batch_size {cfg.batch_size} is not divisible by {world} processes")
        from accelerate.utils import DistributedType

        if acc.distributed_type == DistributedType.DEEPSPEED:
            raise ValueError(
                "launched with accelerate's DeepSpeed plugin: launch with torchrun (or plain "
                "accelerate) and pass --deepspeed zero2 or a DeepSpeed JSON config instead; the "
                "trainer drives DeepSpeed itself, because GradCache owns gradient accumulation"
            )
        triplets, sets = load_training_data(cfg)
        if len(triplets) < cfg.batch_size:
            raise ValueError(
                f"the training data has {len(triplets)} triplets, fewer than one global batch "
                f"(batch_size={cfg.batch_size})"
            )
        steps_per_epoch = len(triplets) // cfg.batch_size
        total = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))
        local = cfg.batch_size // world

        encoder = self.build_model()
        loss_fn = self.build_loss()
        params = [p for p in encoder.peft_model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        from transformers import get_linear_schedule_with_warmup

        scheduler = get_linear_schedule_with_warmup(optimizer, cfg.warmup_steps, total)
        engine = None
        if cfg.deepspeed:
            from lcoemb.training import zero

            ds_config = zero.deepspeed_config(
                cfg.deepspeed,
                micro_batch=local,
                world=world,
                max_grad_norm=cfg.max_grad_norm,
                # DeepSpeed's bf16 mode is for accelerators; CPU bf16 comes from autocast
                bf16=self._bf16() and self.accelerator.device.type != "cpu",
            )
            engine = zero.initialize(encoder.peft_model, optimizer, scheduler, ds_config)
        start = 0
        if cfg.resume:
            start = self._resume(encoder, optimizer, scheduler, len(triplets), engine)
        if start >= total:
            acc.print(f"already trained to step {start} of {total}; nothing to do")

        self.output.mkdir(parents=True, exist_ok=True)
        log = ckpt.open_log(self.output / LOG_FILE, start) if acc.is_main_process else None
        writer = None
        if acc.is_main_process:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.output / "tensorboard"), purge_step=start + 1)
            (self.output / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")

        def embed(fields: list[Any]) -> torch.Tensor:
            # media files are opened chunk by chunk, never a whole global batch at once
            with self.autocast():
                return encoder.embed([to_encoder_item(f) for f in fields]).float()

        keys: list[str] | None = None
        negative_keys: list[str] | None = None

        def compute_loss(reps: dict[str, torch.Tensor]) -> torch.Tensor:
            return loss_fn(
                reps["anchor"],
                reps["positive"],
                reps["negative"],
                positive_keys=keys,
                negative_keys=negative_keys,
            )

        bar = tqdm(
            total=total,
            initial=start,
            desc="Training",
            unit="step",
            disable=not acc.is_main_process,
        )
        loss_value = float("nan")
        t0, done_items = time.perf_counter(), 0
        for step in range(start, total):
            batch = _step_indices(step, len(triplets), cfg.batch_size, steps_per_epoch, cfg.seed)
            mine = [triplets[i] for i in batch[rank * local : (rank + 1) * local]]
            # Negatives are a pool; a slice may hold none, but every process must still take
            # part in gathering them, so the group is always present (possibly empty).
            collated = collate_triplets(mine)
            groups = {
                "anchor": collated["anchor"],
                "positive": collated["positive"],
                "negative": collated["negative"] or [],
            }
            if cfg.mask_duplicates:
                keys = [_key(x) for x in groups["positive"]]
                negative_keys = [_key(x) for x in groups["negative"]]
            # dropout masks depend only on (seed, step, rank): resume replays them exactly
            torch.manual_seed(cfg.seed * 7_919 + step * 104_729 + rank)
            loss_value = grad_cache_step(
                embed,
                groups,
                compute_loss,
                chunk_size=cfg.mini_batch_size,
                backward=acc.backward if engine is None else _engine_backward(engine),
            )
            if engine is not None:  # reduce-scatter, clip, update, schedule, zero the grads
                engine.step()
            elif world > 1:
                # One all-reduce per step, however many GradCache chunks (the model is not
                # DDP-wrapped). SUM then divide: gloo, the CPU backend, has no AVG.
                for p in params:
                    torch.distributed.all_reduce(p.grad)
                    p.grad /= world
            if engine is None:
                if cfg.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)

            done = step + 1
            done_items += cfg.batch_size
            rate = done_items / (time.perf_counter() - t0)
            bar.set_postfix(loss=f"{loss_value:.4f}", triplets_per_s=f"{rate:.1f}")
            bar.update(1)
            if acc.is_main_process and (done % cfg.log_steps == 0 or done == total):
                lr = scheduler.get_last_lr()[0]
                record = {
                    "step": done,
                    "loss": loss_value,
                    "lr": lr,
                    "epoch": done / steps_per_epoch,
                    "triplets_per_s": rate,
                }
                log.write(json.dumps(record) + "\n")
                log.flush()
                writer.add_scalar("train/loss", loss_value, done)
                writer.add_scalar("train/lr", lr, done)
            if done % cfg.save_steps == 0 or done == total:
                state = self._state(done, loss_value, len(triplets))
                self._save(encoder, optimizer, scheduler, state, engine)
        bar.close()

        adapter = self.output / ADAPTER_DIR
        if acc.is_main_process:
            encoder.peft_model.save_pretrained(adapter)
            log.close()
            writer.close()
        acc.wait_for_everyone()
        skipped = sum(s.skipped for s in sets)
        if skipped:
            acc.print(f"skipped {skipped} bad lines (--skip-bad):")
            for s in sets:
                for reason in s.skipped_examples:
                    acc.print(f"  {reason}")
        return TrainResult(self.output, adapter, total, loss_value, skipped)


def train(config: TrainConfig) -> TrainResult:
    """Run a training job described by ``config``; see :class:`Trainer`."""
    return Trainer(config).train()
