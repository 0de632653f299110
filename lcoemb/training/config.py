"""Training settings: one dataclass, loadable from YAML, with the reference recipe as defaults."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TrainConfig:
    """Everything a training run needs. Defaults reproduce the LCO-EMB reference recipe:
    LoRA r=64, alpha=128, dropout 0.05 on the language model; InfoNCE at temperature 0.03 over
    the global batch of 1056; AdamW at 4e-4 with 100 warm-up steps and linear decay; 2 epochs."""

    #: base MLLM: a Hugging Face id, a local folder, or the embedded ``lco-mini-base``
    model: str = "lco-mini-base"
    output: str = ""
    #: triplet sources (files or dataset names), used with equal weight unless ``mix`` is set
    data: list[str] = field(default_factory=list)
    #: ``SOURCE:WEIGHT`` entries mixed by ratio (e.g. 0.8 text, 0.2 multimodal calibration)
    mix: list[str] = field(default_factory=list)
    max_steps: int | None = None
    epochs: float = 2.0
    #: the global contrastive batch, over all processes
    batch_size: int = 1056
    #: the GradCache chunk: items embedded with a graph at once, per process
    mini_batch_size: int = 32
    lr: float = 4e-4
    warmup_steps: int = 100
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    temperature: float = 0.03
    bidirectional: bool = False
    mask_duplicates: bool = False
    matryoshka_dims: list[int] = field(default_factory=list)
    lora_r: int = 64
    lora_alpha: int = 128
    lora_dropout: float = 0.05
    gradient_checkpointing: bool = True
    #: ``auto`` = bf16 where the device computes it fast (CUDA with bf16; CPUs with AMX or
    #: AVX-512 bf16, through autocast), else float32
    precision: str = "auto"
    save_steps: int = 500
    log_steps: int = 1
    keep_checkpoints: int | None = None
    #: continue the run in ``output``; refused unless that run had the same data and settings
    resume: bool = False
    #: start afresh in a non-empty ``output``, deleting the previous run's files there (and
    #: nothing else); without it or ``resume``, a non-empty ``output`` is refused
    overwrite: bool = False
    seed: int = 42
    skip_bad: bool = False
    device: str | None = None
    #: DeepSpeed ZeRO: ``zero2`` (built in) or a DeepSpeed JSON config; None trains without it
    deepspeed: str | None = None

    def __post_init__(self) -> None:
        if self.precision not in ("auto", "bf16", "fp32"):
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
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """Read a YAML mapping of field names (dashes or underscores), then apply overrides."""
        import yaml

        raw = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping of settings, got {type(raw).__name__}")
        values = {str(k).replace("-", "_"): v for k, v in raw.items()}
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"{path}: unknown settings {unknown}; known: {cls.field_names()}")
        values.update(overrides)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
