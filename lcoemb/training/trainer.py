"""Text-only LoRA contrastive training (the LCO-EMB recipe) on accelerate.

One step = one global batch of triplets. Each process embeds its slice with GradCache (chunks of
``mini_batch_size``), the InfoNCE loss gathers embeddings from all processes so every anchor sees
the global batch of positives and hard negatives, and the LoRA gradients are averaged across
processes once per step. Everything that decides a step's result (its data, its dropout masks)
is a function of the step number, so a resumed run repeats exactly what an uninterrupted one
would have done.

A run owns its output folder: :data:`RUN_FILE` records the run's identity (a fingerprint of its
data and the settings that change its result), and ``resume`` continues only a run with the same
identity, from the newest checkpoint that still loads. A non-empty folder is refused unless the
run resumes or ``overwrite`` deletes the previous run's files, so one run's checkpoints can never
be continued by another.

:meth:`Trainer.train` is the recipe; each of its steps is a method: plan the run (settings,
data, identity) and find where it resumes before any model loads, claim the output folder, set
up the model and optimiser, then train step by step, logging and checkpointing, and finish.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, TextIO

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from peft import set_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from lcoemb.config import TrainConfig
from lcoemb.devices import fast_bf16
from lcoemb.encoder import OmniEncoder, locate
from lcoemb.inputs import InputError
from lcoemb.training import checkpoints as ckpt
from lcoemb.training import zero
from lcoemb.training.data import (
    DataError,
    Field,
    Triplet,
    TripletSet,
    collate_triplets,
    load_triplets,
    mix_sources,
    parse_mix_arg,
)
from lcoemb.training.gradcache import grad_cache_step
from lcoemb.training.losses import InfoNCELoss, MatryoshkaLoss

ADAPTER_DIR = "adapter"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
CHECKPOINTS_DIR = "checkpoints"
LOG_FILE = "log.jsonl"
TENSORBOARD_DIR = "tensorboard"
CONFIG_FILE = "config.json"
#: the run's identity (:meth:`Trainer.identity`), written when a run starts
RUN_FILE = "run.json"
#: what a run writes into its output folder: ``overwrite`` deletes exactly these
RUN_FILES = (CHECKPOINTS_DIR, LOG_FILE, ADAPTER_DIR, TENSORBOARD_DIR, CONFIG_FILE, RUN_FILE)
#: The settings that change a run's result; ``resume`` refuses a run written with other values
#: (or other data, or another number of processes). ``max_steps`` and ``epochs`` are not among
#: them, so a finished run can be extended; its linear learning-rate decay then stretches to the
#: new total from the resumed step on.
IDENTITY_SETTINGS = (
    "model",
    "batch_size",
    "seed",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "lora_targets",
    "lr",
    "warmup_steps",
    "weight_decay",
    "max_grad_norm",
    "temperature",
    "bidirectional",
    "mask_duplicates",
    "matryoshka_dims",
    "precision",
    "deepspeed",
)

#: each identity setting's default, which a run written before the setting existed used
_DEFAULTS = {
    f.name: f.default_factory() if f.default is MISSING else f.default  # type: ignore[misc]
    for f in fields(TrainConfig)
    if f.name in IDENTITY_SETTINGS
    and (f.default is not MISSING or f.default_factory is not MISSING)
}


@dataclass
class _ResumePoint:
    """The checkpoint a resumed run continues from, its files already read (``None`` under
    DeepSpeed, whose engine reads its own shards)."""

    step: int
    folder: Path
    weights: dict[str, torch.Tensor] | None = None
    optimizer_state: dict[str, Any] | None = None


@dataclass
class TrainResult:
    """What a finished run reports: its folder, the trained adapter's folder, the number of
    steps trained to, the last step's loss and the count of data lines skipped."""

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


def _fingerprint_text(value: Field | None) -> str:
    """An unambiguous text form of a field: every part is tagged and length-prefixed."""
    if value is None:
        return "n"
    if isinstance(value, str):
        return f"t{len(value)}:{value}"
    if isinstance(value, list):
        return f"l{len(value)}:" + "".join(_fingerprint_text(part) for part in value)
    path = os.fspath(value.source)
    return f"{type(value).__name__}{len(path)}:{path}"


def data_fingerprint(triplets: Sequence[Triplet]) -> str:
    """A SHA-256 over the triplets in order, so that ``resume`` notices other data, another
    order or another mix. Media count by their (absolute) path, not their bytes: reading every
    file of a calibration set would cost more than the check is worth; moving the data folder
    therefore counts as other data."""
    digest = hashlib.sha256()
    for t in triplets:
        text = _fingerprint_text(t.anchor) + _fingerprint_text(t.positive)
        digest.update((text + _fingerprint_text(t.negative)).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def _describe_data(identity: dict[str, Any]) -> str:
    return f"{identity.get('triplets')} triplets, fingerprint {str(identity.get('data'))[:12]}"


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


@dataclass
class _Plan:
    """What a run will do, decided before any model loads: its data, its length and its
    identity."""

    triplets: list[Triplet]
    sets: list[TripletSet]
    steps_per_epoch: int
    #: the step the run ends after (``max_steps``, else ``epochs`` over the data)
    total: int
    identity: dict[str, Any]


@dataclass
class _Run:
    """What a training step works on: the model, its loss and the optimisation around them."""

    encoder: OmniEncoder
    loss_fn: torch.nn.Module
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    #: the DeepSpeed engine around the LoRA model (``--deepspeed``), else None
    engine: Any = None


class _Progress:
    """A run's progress: the bar (shown by the main process) and, written by the main process
    only, the step log (:data:`LOG_FILE`, one JSON object per logged step) and TensorBoard's
    ``train/loss`` and ``train/lr``."""

    def __init__(
        self,
        config: TrainConfig,
        accelerator: Accelerator,
        plan: _Plan,
        log: TextIO | None,
        writer: SummaryWriter | None,
    ) -> None:
        self.config = config
        self.accelerator = accelerator
        self.plan = plan
        self.log = log
        self.writer = writer
        self.bar: Any = None
        self.t0 = 0.0
        self.done_items = 0

    def begin(self, start: int) -> None:
        """Show the bar at ``start`` and start the throughput clock."""
        self.bar = tqdm(
            total=self.plan.total,
            initial=start,
            desc="Training",
            unit="step",
            disable=not self.accelerator.is_main_process,
        )
        self.t0, self.done_items = time.perf_counter(), 0

    def step_done(self, done: int, loss: float, scheduler: Any) -> None:
        """Advance the bar past step ``done``; log it every ``log_steps`` steps and at the end."""
        cfg = self.config
        self.done_items += cfg.batch_size
        rate = self.done_items / (time.perf_counter() - self.t0)
        self.bar.set_postfix(loss=f"{loss:.4f}", triplets_per_s=f"{rate:.1f}")
        self.bar.update(1)
        if not self.accelerator.is_main_process:
            return
        if done % cfg.log_steps and done != self.plan.total:
            return
        lr = scheduler.get_last_lr()[0]
        record = {
            "step": done,
            "loss": loss,
            "lr": lr,
            "epoch": done / self.plan.steps_per_epoch,
            "triplets_per_s": rate,
        }
        self.log.write(json.dumps(record) + "\n")
        self.log.flush()
        self.writer.add_scalar("train/loss", loss, done)
        self.writer.add_scalar("train/lr", lr, done)

    def close(self) -> None:
        """Close the bar, the step log and TensorBoard's files."""
        self.bar.close()
        if self.log is not None:
            self.log.close()
            self.writer.close()


class Trainer:
    """Builds the LoRA model, the optimiser and the loss from a :class:`TrainConfig`, and runs
    the loop with checkpoints, logs and resume."""

    def __init__(self, config: TrainConfig):
        carried = locate(config.model).adapter
        if carried is not None:
            raise ValueError(
                f"{config.model!r} already carries an adapter ({carried}); train from its base "
                "instead (lco-mini-base for lco-mini)"
            )
        self.config = config
        cpu = config.device == "cpu" or (config.device is None and not torch.cuda.is_available())
        self.accelerator = Accelerator(cpu=cpu)
        self.output = Path(config.output)
        self.checkpoints_dir = self.output / CHECKPOINTS_DIR

    # ------------------------------------------------------------------ the recipe

    def train(self) -> TrainResult:
        """Run the job: plan it and find where it resumes before any model loads, claim the
        output folder, set up the model, then train step by step, logging and checkpointing."""
        plan = self._plan()
        resume_from = self._resume_point(plan) if self.config.resume else None
        start = 0 if resume_from is None else resume_from.step
        progress = self._claim_output(plan, start)
        run = self._setup(plan)
        if resume_from is not None:
            self._restore(resume_from, run)
        progress.begin(start)
        loss = float("nan")
        for step in range(start, plan.total):
            loss = self._train_step(step, plan, run)
            progress.step_done(step + 1, loss, run.scheduler)
            self._checkpoint(step + 1, loss, plan, run)
        progress.close()
        return self._finish(plan, run, loss)

    # ------------------------------------------------------------------ setup

    def _plan(self) -> _Plan:
        """Check the settings against the launch, read the data and check the output folder:
        the run's length and identity, all before any model loads."""
        cfg = self.config
        acc = self.accelerator
        if cfg.batch_size % acc.num_processes:
            raise ValueError(
                f"batch_size {cfg.batch_size} is not divisible by {acc.num_processes} processes"
            )
        if acc.distributed_type == DistributedType.DEEPSPEED:
            raise ValueError(
                "launched with accelerate's DeepSpeed plugin: launch with torchrun (or plain "
                "accelerate) and pass --deepspeed zero2 or a DeepSpeed JSON config instead; the "
                "trainer drives DeepSpeed itself, because GradCache owns gradient accumulation"
            )
        triplets, sets = load_training_data(cfg)
        self._check_output_free()
        if len(triplets) < cfg.batch_size:
            raise ValueError(
                f"the training data has {len(triplets)} triplets, fewer than one global batch "
                f"(batch_size={cfg.batch_size})"
            )
        steps_per_epoch = len(triplets) // cfg.batch_size
        total = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))
        return _Plan(triplets, sets, steps_per_epoch, total, self.identity(triplets))

    def _claim_output(self, plan: _Plan, start: int) -> _Progress:
        """Once every process has checked the folder, the main process makes it this run's
        (:meth:`_prepare_output`), opens the step log and TensorBoard, and writes
        :data:`CONFIG_FILE`."""
        acc = self.accelerator
        acc.wait_for_everyone()  # every process has checked the folder before it changes
        log = writer = None
        if acc.is_main_process:
            self._prepare_output(plan.identity)
            log = ckpt.open_log(self.output / LOG_FILE, start)
            writer = SummaryWriter(str(self.output / TENSORBOARD_DIR), purge_step=start + 1)
            config = json.dumps(self.config.to_dict(), indent=2) + "\n"
            (self.output / CONFIG_FILE).write_text(config)
        acc.wait_for_everyone()
        return _Progress(self.config, acc, plan, log, writer)

    def _setup(self, plan: _Plan) -> _Run:
        """The LoRA model, the loss, AdamW with a linear warm-up and decay over ``plan.total``
        steps and, with ``deepspeed``, the engine around them."""
        cfg = self.config
        encoder = self.build_model()
        loss_fn = self.build_loss()
        params = [p for p in encoder.peft_model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = get_linear_schedule_with_warmup(optimizer, cfg.warmup_steps, plan.total)
        run = _Run(encoder, loss_fn, params, optimizer, scheduler)
        if cfg.deepspeed:
            world = self.accelerator.num_processes
            ds_config = zero.deepspeed_config(
                cfg.deepspeed,
                micro_batch=cfg.batch_size // world,
                world=world,
                max_grad_norm=cfg.max_grad_norm,
                # DeepSpeed's bf16 mode is for accelerators; CPU bf16 comes from autocast
                bf16=self._bf16() and self.accelerator.device.type != "cpu",
            )
            run.engine = zero.initialize(encoder.peft_model, optimizer, scheduler, ds_config)
        return run

    def _bf16(self) -> bool:
        """Whether to compute in bf16: asked for, or ``auto`` on a device with fast bf16."""
        precision = self.config.precision
        if precision != "auto":
            return precision == "bf16"
        return fast_bf16(self.accelerator.device)

    def _dtype(self) -> torch.dtype:
        """The frozen base weights' dtype: bf16 when computing in bf16, on every device.

        The LoRA weights stay float32 whatever the base (peft upcasts them), so the optimiser
        state is float32. A float32 base under autocast would be re-cast to bf16 in every
        forward and backward (autocast caches casts of trainable leaves only); storing it in
        bf16 computes the same products without that traffic and halves the model's memory.
        """
        return torch.bfloat16 if self._bf16() else torch.float32

    def autocast(self) -> Any:
        """bf16 autocast when computing in bf16, on every device (gradient checkpointing
        replays the same autocast state).

        It is what runs the float32 LoRA weights' matmuls in bf16. Without it, peft computes
        each LoRA branch in float32 on a bf16 base: on a GPU that is float32 GEMMs at a
        fifteenth of the tensor cores' bf16 rate, plus float32 copies of every adapted layer's
        input and output: LoRA at r=64 is about 4 % of a step's FLOPs, but by estimate a third
        of the 3B-shaped step's time on an H200 ran in it (``benchmarks/README.md``). With it,
        training computes as Hugging Face's Trainer does with ``bf16=True``, the reference
        recipe's setting."""
        return torch.autocast(
            self.accelerator.device.type, dtype=torch.bfloat16, enabled=self._bf16()
        )

    def build_model(self) -> OmniEncoder:
        """The encoder of ``model`` with a fresh LoRA on its language model (the same
        initialisation on every process and every run of a seed), in training mode."""
        cfg = self.config
        encoder = OmniEncoder.from_pretrained(
            cfg.model, device=self.accelerator.device, dtype=self._dtype()
        )
        backbone = encoder.backbone
        model = encoder.add_lora(
            r=cfg.lora_r,
            alpha=cfg.lora_alpha,
            dropout=cfg.lora_dropout,
            seed=cfg.seed,
            targets=cfg.lora_targets or None,
        )
        if self._bf16():  # the model then runs under :meth:`autocast` only
            # peft casts each LoRA layer's input to the float32 LoRA weights, a copy autocast
            # at once undoes; set per layer (not a context) so checkpoint replays agree
            for module in model.modules():
                if isinstance(module, BaseTunerLayer):
                    module.cast_input_dtype_enabled = False
            if self.accelerator.device.type == "cpu":
                backbone.use_float32_attention()
        if cfg.gradient_checkpointing:
            backbone.enable_gradient_checkpointing()
        model.train()
        return encoder

    def build_loss(self) -> torch.nn.Module:
        """InfoNCE as configured, inside :class:`MatryoshkaLoss` when ``matryoshka_dims``."""
        cfg = self.config
        loss: torch.nn.Module = InfoNCELoss(
            temperature=cfg.temperature,
            bidirectional=cfg.bidirectional,
            mask_duplicates=cfg.mask_duplicates,
        )
        if cfg.matryoshka_dims:
            loss = MatryoshkaLoss(loss, cfg.matryoshka_dims)
        return loss

    # ------------------------------------------------------------------ run identity

    def identity(self, triplets: Sequence[Triplet]) -> dict[str, Any]:
        """What makes a run this run: its data (:func:`data_fingerprint`), the
        :data:`IDENTITY_SETTINGS` and the number of processes. ``precision`` is recorded as
        resolved (``auto`` can mean bf16 on one machine and fp32 on another)."""
        cfg = self.config
        settings = {name: getattr(cfg, name) for name in IDENTITY_SETTINGS}
        settings["precision"] = "bf16" if self._bf16() else "fp32"
        return {
            "data": data_fingerprint(triplets),
            "triplets": len(triplets),
            "processes": self.accelerator.num_processes,
            **settings,
        }

    def _check_output_free(self) -> None:
        """Refuse a non-empty output folder unless resuming or overwriting: a fresh run written
        over another run's files would leave checkpoints that a later ``resume`` continues."""
        cfg = self.config
        if cfg.resume or cfg.overwrite or not self.output.is_dir():
            return
        entries = sorted(p.name for p in self.output.iterdir())
        if entries:
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise ckpt.RunFolderError(
                f"output folder {self.output} is not empty ({shown}): pass --resume to continue "
                "the run in it, --overwrite to delete that run's files and start afresh, or "
                "choose another --output"
            )

    def _check_identity(self, recorded: Any, identity: dict[str, Any], what: str) -> None:
        """Refuse to resume ``what`` (a folder or a checkpoint) unless it was written by a run
        with this ``identity``; the message lists every difference as old -> new."""
        if not isinstance(recorded, dict) or "data" not in recorded:
            raise ckpt.RunFolderError(
                f"{what} has no run identity (it was written by an older lcoemb, or not by "
                "lcoemb train), so --resume cannot check that it belongs to this run: start "
                "afresh with --overwrite, or choose another --output"
            )
        changed = []
        if any(recorded.get(k) != identity[k] for k in ("data", "triplets")):
            changed.append(f"data ({_describe_data(recorded)} -> {_describe_data(identity)})")
        # a setting added after the run was written is recorded as its default value
        old = {key: recorded.get(key, _DEFAULTS.get(key)) for key in identity}
        changed += [
            f"{key} ({old[key]!r} -> {value!r})"
            for key, value in identity.items()
            if key not in ("data", "triplets") and old[key] != value
        ]
        if changed:
            raise ckpt.RunFolderError(
                f"cannot resume {what}: settings changed since it was written: "
                f"{', '.join(changed)}; resume with the same data and settings, or start afresh "
                "with --overwrite (or another --output)"
            )

    def _prepare_output(self, identity: dict[str, Any]) -> None:
        """Main process only, once every process has checked the folder: delete the previous
        run's files when overwriting (nothing else in the folder), then record this run."""
        if self.config.overwrite:
            for name in RUN_FILES:
                path = self.output / name
                if path.is_symlink() or path.is_file():
                    path.unlink()
                elif path.is_dir():
                    shutil.rmtree(path)
        ckpt.clean_partial(self.checkpoints_dir)
        self.output.mkdir(parents=True, exist_ok=True)
        ckpt.write_json_atomic(self.output / RUN_FILE, identity)

    # ------------------------------------------------------------------ resume

    def _resume_point(self, plan: _Plan) -> _ResumePoint | None:
        """Where ``resume`` continues: the newest checkpoint that loads, once the folder and
        that checkpoint are shown to belong to this run (None: start at step 0).

        A crash or a full disk can leave a checkpoint's files truncated; such a checkpoint is
        skipped, saying why, for the one before it. Only reads: every process calls this before
        the folder changes, and nothing is applied to the model until :meth:`_restore`.
        """
        acc = self.accelerator
        identity = plan.identity
        run_file = self.output / RUN_FILE
        if run_file.exists():
            try:
                recorded = json.loads(run_file.read_bytes())
            except (OSError, ValueError) as error:
                raise ckpt.RunFolderError(f"{run_file}: cannot be read: {error}") from error
            self._check_identity(recorded, identity, f"the run in {self.output}")
        elif any((self.output / name).exists() for name in RUN_FILES):
            self._check_identity(None, identity, f"the run in {self.output} ({RUN_FILE} missing)")
        skipped = []
        for _, folder in reversed(ckpt.list_checkpoints(self.checkpoints_dir)):
            try:
                state, point = self._read_checkpoint(folder)
            except ckpt.RunFolderError as error:
                acc.print(f"skipping checkpoint {folder.name}: {error}")
                skipped.append(f"{folder.name}: {error}")
                continue
            self._check_identity(state.get("identity"), identity, f"checkpoint {folder}")
            if skipped:
                acc.print(f"resuming from {folder.name}, the newest checkpoint that loads")
            if point.step >= plan.total:
                acc.print(f"already trained to step {point.step} of {plan.total}; nothing to do")
            return point
        if skipped:
            raise ckpt.RunFolderError(
                f"no checkpoint in {self.checkpoints_dir} can be loaded ({'; '.join(skipped)}): "
                "start afresh with --overwrite, or choose another --output"
            )
        return None

    def _read_checkpoint(self, folder: Path) -> tuple[dict[str, Any], _ResumePoint]:
        """A checkpoint's state and files, all read (none applied); :class:`RunFolderError`
        when any of them cannot be used."""
        state = ckpt.read_state(folder)
        step = state.get("step")
        if not isinstance(step, int):
            raise ckpt.RunFolderError(f"{folder / ckpt.STATE_FILE}: no integer 'step'")
        if self.config.deepspeed:
            return state, _ResumePoint(step, folder)
        weights = ckpt.load_safetensors(folder / ADAPTER_DIR / ADAPTER_WEIGHTS)
        saved = ckpt.load_torch(folder / OPTIMIZER_FILE)
        if not isinstance(saved, dict) or not {"optimizer", "scheduler"} <= saved.keys():
            raise ckpt.RunFolderError(f"{folder / OPTIMIZER_FILE}: no optimizer and scheduler")
        return state, _ResumePoint(step, folder, weights, saved)

    def _restore(self, point: _ResumePoint, run: _Run) -> None:
        """Apply a checkpoint read by :meth:`_resume_point`."""
        if run.engine is not None:  # its checkpoint holds LoRA weights and optimiser shards
            zero.load(run.engine, point.folder)
            return
        set_peft_model_state_dict(run.encoder.peft_model, point.weights)
        run.optimizer.load_state_dict(point.optimizer_state["optimizer"])
        run.scheduler.load_state_dict(point.optimizer_state["scheduler"])

    # ------------------------------------------------------------------ one step

    def _train_step(self, step: int, plan: _Plan, run: _Run) -> float:
        """Step ``step``: embed this process's slice of the step's global batch with GradCache,
        then one optimiser update on gradients averaged over the processes; returns the loss."""
        cfg = self.config
        acc = self.accelerator
        local = cfg.batch_size // acc.num_processes
        rank = acc.process_index
        batch = _step_indices(
            step, len(plan.triplets), cfg.batch_size, plan.steps_per_epoch, cfg.seed
        )
        mine = [plan.triplets[i] for i in batch[rank * local : (rank + 1) * local]]
        # Negatives are a pool; a slice may hold none, but every process must still take part
        # in gathering them, so the group is always present (possibly empty).
        collated = collate_triplets(mine)
        groups = {
            "anchor": collated["anchor"],
            "positive": collated["positive"],
            "negative": collated["negative"] or [],
        }
        keys = negative_keys = None
        if cfg.mask_duplicates:
            keys = [_key(x) for x in groups["positive"]]
            negative_keys = [_key(x) for x in groups["negative"]]

        def compute_loss(reps: dict[str, torch.Tensor]) -> torch.Tensor:
            return run.loss_fn(
                reps["anchor"],
                reps["positive"],
                reps["negative"],
                positive_keys=keys,
                negative_keys=negative_keys,
            )

        # dropout masks depend only on (seed, step, rank): resume replays them exactly
        torch.manual_seed(cfg.seed * 7_919 + step * 104_729 + rank)
        loss = grad_cache_step(
            lambda fields: self._embed(run.encoder, fields, mine),
            groups,
            compute_loss,
            chunk_size=cfg.mini_batch_size,
            backward=acc.backward if run.engine is None else _engine_backward(run.engine),
        )
        self._update(run)
        return loss

    def _embed(self, encoder: OmniEncoder, fields: list[Any], mine: list[Triplet]) -> torch.Tensor:
        """Embed one GradCache chunk of ``fields`` from the triplets ``mine``; a field that
        cannot be read is a :class:`DataError` naming its data line. Media files are opened
        chunk by chunk, never a whole global batch at once."""
        with self.autocast():
            try:
                return encoder.embed(fields).float()
            except InputError as error:
                if error.index is None:
                    raise
                # collate_triplets passes the step's triplet fields on as they are, so the bad
                # field is one of them by identity: name its data line
                bad = fields[error.index]
                where = next(
                    f"{t.source}: field {role!r}"
                    for t in mine
                    for role in ("anchor", "positive", "negative")
                    if getattr(t, role) is bad
                )
                raise DataError(f"{where}: {error.reason}") from error

    def _update(self, run: _Run) -> None:
        """One optimiser update on the accumulated gradients: averaged over the processes,
        clipped to ``max_grad_norm``, then the optimiser and the schedule step."""
        world = self.accelerator.num_processes
        if run.engine is not None:  # reduce-scatter, clip, update, schedule, zero the grads
            run.engine.step()
            return
        if world > 1:
            # One all-reduce per step, however many GradCache chunks (the model is not
            # DDP-wrapped). SUM then divide: gloo, the CPU backend, has no AVG.
            for p in run.params:
                torch.distributed.all_reduce(p.grad)
                p.grad /= world
        if self.config.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(run.params, self.config.max_grad_norm)
        run.optimizer.step()
        run.scheduler.step()
        run.optimizer.zero_grad(set_to_none=True)

    # ------------------------------------------------------------------ checkpoints

    def _checkpoint(self, done: int, loss: float, plan: _Plan, run: _Run) -> None:
        """After step ``done``: save a checkpoint every ``save_steps`` steps and at the end."""
        if done % self.config.save_steps and done != plan.total:
            return
        state = {
            "step": done,
            "loss": loss,
            "world_size": self.accelerator.num_processes,
            "identity": plan.identity,
            "config": self.config.to_dict(),
        }
        self._save(run, state)

    def _save(self, run: _Run, state: dict[str, Any]) -> None:
        """Write checkpoint ``state["step"]`` atomically (the adapter, and the optimiser and
        schedule, or the engine's ZeRO shards), then prune to ``keep_checkpoints``."""
        acc = self.accelerator
        staged = None
        if run.engine is not None:  # every process writes its ZeRO partition, then one renames
            staged = self.checkpoints_dir / f".tmp-step-{state['step']}-deepspeed"
            if acc.is_main_process:
                shutil.rmtree(staged, ignore_errors=True)
                staged.mkdir(parents=True)
            acc.wait_for_everyone()
            zero.save(run.engine, staged)
            acc.wait_for_everyone()

        def write(folder: Path) -> None:
            run.encoder.peft_model.save_pretrained(folder / ADAPTER_DIR)
            if staged is not None:
                shutil.move(staged / zero.CHECKPOINT_TAG, folder / zero.CHECKPOINT_TAG)
                return
            torch.save(
                {"optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict()},
                folder / OPTIMIZER_FILE,
            )

        if acc.is_main_process:
            ckpt.save_checkpoint(self.checkpoints_dir, state["step"], state, write)
            ckpt.prune(self.checkpoints_dir, self.config.keep_checkpoints)
            if staged is not None:
                shutil.rmtree(staged, ignore_errors=True)
        acc.wait_for_everyone()

    # ------------------------------------------------------------------ the end

    def _finish(self, plan: _Plan, run: _Run, loss: float) -> TrainResult:
        """Save the trained adapter and report the data lines skipped (``skip_bad``)."""
        acc = self.accelerator
        adapter = self.output / ADAPTER_DIR
        if acc.is_main_process:
            run.encoder.peft_model.save_pretrained(adapter)
        acc.wait_for_everyone()
        skipped = sum(s.skipped for s in plan.sets)
        if skipped:
            acc.print(f"skipped {skipped} bad lines (--skip-bad):")
            for s in plan.sets:
                for reason in s.skipped_examples:
                    acc.print(f"  {reason}")
        return TrainResult(self.output, adapter, plan.total, loss, skipped)


def train(config: TrainConfig) -> TrainResult:
    """Run a training job described by ``config``; see :class:`Trainer`."""
    return Trainer(config).train()
