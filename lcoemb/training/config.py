"""Training settings: one dataclass, loadable from YAML, with the reference recipe as defaults.

Each field carries its command-line help in its metadata; ``lcoemb train`` builds its options
from them (:func:`lcoemb.config.add_config_arguments`), so a default is written once, here.

A recipe with other defaults derives its settings from these, either with
``dataclasses.replace(TrainConfig(), lr=1e-3, ...)`` or with a subclass that redeclares the
fields it changes and adds its own (``@dataclass class Mine(TrainConfig): lr: float = 1e-3``);
both run the checks of :meth:`TrainConfig.__post_init__`, and
:meth:`TrainConfig.train_config` turns a subclass back into the plain settings of a run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

PRECISIONS = ("auto", "bf16", "fp32")


@dataclass
class TrainConfig:
    """Everything a training run needs. Defaults reproduce the LCO-EMB reference recipe:
    LoRA r=64, alpha=128, dropout 0.05 on the language model; InfoNCE at temperature 0.03 over
    the global batch of 1056; AdamW at 4e-4 with 100 warm-up steps and linear decay; 2 epochs.
    Each field's help (``lcoemb train --help``) is in its metadata."""

    model: str = field(
        default="lco-mini-base",
        metadata={"help": "base MLLM: a Hugging Face id, a local folder, or lco-mini-base"},
    )
    output: str = field(
        default="",
        metadata={
            "help": "output folder (adapter/, log.jsonl, tensorboard/, checkpoints/step-N/, "
            "run.json); required; a non-empty one needs --resume or --overwrite",
            "default_text": "none",
        },
    )
    data: list[str] = field(
        default_factory=list,
        metadata={
            "help": "triplet sources: .jsonl/.csv/.parquet files, dataset folders or hub "
            "dataset names, used with equal weight"
        },
    )
    mix: list[str] = field(
        default_factory=list,
        metadata={
            "help": "SOURCE:WEIGHT entries mixed by ratio (used instead of --data), e.g. "
            "text.jsonl:0.8 calib.jsonl:0.2"
        },
    )
    max_steps: int | None = field(
        default=None,
        metadata={"help": "stop after this many optimiser steps, overriding --epochs"},
    )
    epochs: float = field(default=2.0, metadata={"help": "passes over the data"})
    batch_size: int = field(
        default=1056, metadata={"help": "the global contrastive batch, over all processes"}
    )
    mini_batch_size: int = field(
        default=32,
        metadata={"help": "the GradCache chunk: items embedded with a graph at once, per process"},
    )
    lr: float = field(default=4e-4, metadata={"help": "peak learning rate"})
    warmup_steps: int = field(
        default=100, metadata={"help": "linear warm-up steps, then linear decay to 0"}
    )
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    max_grad_norm: float | None = field(
        default=1.0, metadata={"help": "clip the LoRA gradients to this norm; 0 does not clip"}
    )
    temperature: float = field(default=0.03, metadata={"help": "InfoNCE temperature"})
    bidirectional: bool = field(
        default=False,
        metadata={
            "help": "also score each positive against all anchors and average the two "
            "directions, as CLIP does"
        },
    )
    mask_duplicates: bool = field(
        default=False,
        metadata={
            "help": "leave out of each anchor's softmax the other positives and hard "
            "negatives that are the same item as its own positive: false negatives"
        },
    )
    matryoshka_dims: list[int] = field(
        default_factory=list,
        metadata={"help": "Matryoshka: also train the vectors truncated to these sizes"},
    )
    lora_r: int = field(default=64, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=128, metadata={"help": "LoRA alpha"})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout"})
    gradient_checkpointing: bool = field(
        default=True,
        metadata={"help": "recompute activations in the backward pass to save memory"},
    )
    precision: Literal["auto", "bf16", "fp32"] = field(
        default="auto",
        metadata={
            "help": "auto: bf16 where the device computes it fast (CUDA with bf16; CPUs with "
            "AMX or AVX-512 bf16, through autocast), else fp32"
        },
    )
    save_steps: int = field(default=500, metadata={"help": "checkpoint every N steps"})
    log_steps: int = field(
        default=1, metadata={"help": "write log.jsonl and TensorBoard every N steps"}
    )
    keep_checkpoints: int | None = field(
        default=None,
        metadata={"help": "keep only the newest N checkpoints", "default_text": "all"},
    )
    resume: bool = field(
        default=False,
        metadata={
            "help": "continue the run in OUTPUT from its newest checkpoint that loads; refused "
            "unless that run had the same data and settings; --max-steps and --epochs may grow"
        },
    )
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "start afresh in a non-empty OUTPUT, deleting the previous run's files "
            "there (checkpoints/, log.jsonl, adapter/, tensorboard/, config.json, run.json) "
            "and nothing else; without it or --resume, a non-empty OUTPUT is refused"
        },
    )
    seed: int = field(default=42, metadata={"help": "seed for data order, LoRA init and dropout"})
    skip_bad: bool = field(
        default=False,
        metadata={"help": "skip malformed data lines, count them, and report at the end"},
    )
    device: str | None = field(
        default=None,
        metadata={"help": "torch device", "default_text": "cuda when available, else cpu"},
    )
    deepspeed: str | None = field(
        default=None,
        metadata={
            "help": "DeepSpeed ZeRO: 'zero2' (built in) or a DeepSpeed JSON config, which "
            "need pip install deepspeed; unset trains without DeepSpeed"
        },
    )

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be auto, bf16 or fp32, got {self.precision!r}")
        for name in ("batch_size", "mini_batch_size", "save_steps", "log_steps", "lora_r"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.resume and self.overwrite:
            raise ValueError("resume continues the run in output, overwrite deletes it: give one")

    @classmethod
    def field_names(cls) -> list[str]:
        """The names of the settings, in declaration order."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """Read a YAML mapping of field names (dashes or underscores), then apply overrides."""
        raw = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping of settings, got {type(raw).__name__}")
        values = {str(k).replace("-", "_"): v for k, v in raw.items()}
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"{path}: unknown settings {unknown}; known: {cls.field_names()}")
        values.update(overrides)
        return cls(**values)

    def train_config(self, **changes: Any) -> TrainConfig:
        """These settings as a plain :class:`TrainConfig` with ``changes`` applied: a subclass's
        own fields (a recipe's evaluation sizes, say) are left out, so they reach neither the
        run's ``config.json`` nor its checks."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(TrainConfig)}
        return TrainConfig(**{**values, **changes})

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready mapping (what a run writes to ``config.json``)."""
        return dataclasses.asdict(self)
