"""The settings of every command, and the command-line options built from them: one source for
each setting's default and help.

The settings dataclasses live here, in one light module (stdlib, yaml and the torch-free model
registry), so that ``lcoemb --help`` builds every option without importing torch:

- :class:`TrainConfig`: a text-only LoRA contrastive training run (``lcoemb train``);
- :class:`QuickstartConfig`: the quickstart's run, a :class:`TrainConfig` with the quickstart's
  defaults and evaluation sizes (``lcoemb quickstart``);
- :class:`AblationConfig`: the calibration ablation, a :class:`QuickstartConfig` with the
  variants to compare (``lcoemb mini ablation``);
- :class:`PretrainConfig`: stage 1 of LCO-Mini (``lcoemb mini pretrain``);
- :class:`ServeConfig`: the embeddings server (``lcoemb serve``).

A settings dataclass documents each field in its metadata::

    batch_size: int = field(default=1056, metadata={"help": "global batch over all processes"})

and :func:`add_config_arguments` turns every field into a flag: ``batch_size`` becomes
``--batch-size``, its help is the metadata's ``help`` followed by the field's default, and its
type comes from the annotation. No default is put into the parsed namespace: a flag left out is
absent, so :func:`given_settings` returns only what the command line set, and the dataclass
(or a settings file read before it) supplies the rest.

Metadata keys besides ``help``:

- ``flag``: the option's name where it is not the field's (``"--cors-origin"`` for
  ``cors_origins``);
- ``default_text``: what the help shows as the default where the field's value would mislead
  (a ``None`` that the command decides at run time);
- ``type``: a function that parses the option's one value, for a field whose annotation has no
  command-line form of its own (``TASK=VALUE,...`` for a mapping);
- ``required``: the command line must give the option (no default is shown).

Annotations map to options as follows: ``int``, ``float``, ``str`` (and ``X | None``) take one
value of that type; ``Literal[...]`` takes one of its values; ``Path`` takes a path (an empty
one is ``None`` for ``Path | None``); ``list[X]`` takes one or more values; ``tuple[X, ...]``
is a repeatable flag; ``bool`` is a switch: ``--name`` (and ``--no-name`` when the default is
on, or when a settings file may have turned it on). Fields that ``__init__`` does not take
(``field(init=False)``: values derived from others) get no option.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from lcoemb.mini.registry import DEFAULT_MODEL

__all__ = [
    "ABLATION_VARIANTS",
    "PRECISIONS",
    "PRETRAIN_TASKS",
    "PROJECTOR_NAMES",
    "AblationConfig",
    "PretrainConfig",
    "QuickstartConfig",
    "ServeConfig",
    "TrainConfig",
    "add_config_arguments",
    "flag_name",
    "given_settings",
    "task_values",
]


# ----------------------------------------------------------------------- options from settings


def flag_name(field: dataclasses.Field) -> str:
    """The command-line option of a settings field: its metadata's ``flag``, else
    ``--field-name``."""
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _default_text(field: dataclasses.Field) -> str | None:
    """How the help shows the field's default (``None``: the field has none)."""
    if "default_text" in field.metadata:
        return field.metadata["default_text"]
    value = _default(field)
    if value is dataclasses.MISSING or field.metadata.get("required"):
        return None
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None or (isinstance(value, (list, tuple, dict)) and not value):
        return "none"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    return str(value)


def _path_or_none(text: str) -> Path | None:
    """An optional path option: an empty value (``--index ""``) means none."""
    return Path(text) if text else None


def _option(field: dataclasses.Field, annotation: Any, negatable: bool) -> dict[str, Any]:
    """``add_argument`` keywords for one field, from its metadata's ``type`` or its annotation."""
    if "type" in field.metadata:
        return {"type": field.metadata["type"]}
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    optional = len(args) < len(typing.get_args(annotation))
    kind = args[0] if optional and len(args) == 1 else annotation
    origin = typing.get_origin(kind)
    if kind is bool:
        on = _default(field) is True
        return {"action": argparse.BooleanOptionalAction if on or negatable else "store_true"}
    if origin is list:
        return {"nargs": "+", "type": typing.get_args(kind)[0]}
    if origin is tuple:
        return {"action": "append", "type": typing.get_args(kind)[0]}
    if origin is Literal:
        choices = typing.get_args(kind)
        return {"type": type(choices[0]), "choices": choices}
    if kind is Path:
        return {"type": _path_or_none if optional else Path}
    if kind in (int, float, str):
        return {"type": kind}
    raise TypeError(f"{field.name}: no command-line form for {annotation!r}")


def add_config_arguments(
    parser: argparse.ArgumentParser,
    config: type,
    *,
    only: Iterable[str] | None = None,
    skip: Iterable[str] = (),
    from_file: bool = False,
) -> None:
    """Add one option per field of the settings dataclass ``config`` to ``parser`` (only the
    fields in ``only`` when given, and never those in ``skip``), with the help and the default
    from the field (see the module docstring). ``from_file``: another source (a settings file)
    may set the fields too, so every switch gets its ``--no-`` form to turn off what that
    source turned on."""
    hints = typing.get_type_hints(config)
    chosen = None if only is None else set(only)
    skipped = set(skip)
    for f in dataclasses.fields(config):
        if not f.init or f.name in skipped or (chosen is not None and f.name not in chosen):
            continue
        flag = flag_name(f)
        help_text = f.metadata.get("help")
        shown = _default_text(f)
        if shown is not None:
            help_text = f"{help_text} (default: {shown})" if help_text else f"default: {shown}"
        option = _option(f, hints[f.name], from_file)
        if "type" in option and "choices" not in option:  # argparse shows choices as {a,b}
            option["metavar"] = flag[2:].upper().replace("-", "_")
        parser.add_argument(
            flag,
            dest=f.name,
            default=argparse.SUPPRESS,
            required=bool(f.metadata.get("required")),
            help=help_text.replace("%", "%%") if help_text else None,
            **option,
        )


def given_settings(config: type, args: argparse.Namespace) -> dict[str, Any]:
    """The fields of the settings dataclass ``config`` that ``args`` holds (those given on the
    command line, with those that a parser adds with defaults of its own), ready for
    ``config(**settings)``: a repeated flag's values become the tuple the field holds."""
    hints = typing.get_type_hints(config)
    values = vars(args)
    settings = {}
    for f in dataclasses.fields(config):
        if f.init and f.name in values:
            value = values[f.name]
            if typing.get_origin(hints[f.name]) is tuple and isinstance(value, list):
                value = tuple(value)
            settings[f.name] = value
    return settings


# ----------------------------------------------------------------------------------- training

PRECISIONS = ("auto", "bf16", "fp32")


@dataclass
class TrainConfig:
    """Everything a training run needs. Defaults reproduce the LCO-EMB reference recipe:
    LoRA r=64, alpha=128, dropout 0.05 on the language model; InfoNCE at temperature 0.03 over
    the global batch of 1056; AdamW at 4e-4 with 100 warm-up steps and linear decay; 2 epochs.
    Each field's help (``lcoemb train --help``) is in its metadata.

    A recipe with other defaults derives its settings from these, either with
    ``dataclasses.replace(TrainConfig(), lr=1e-3, ...)`` or with a subclass that redeclares the
    fields it changes and adds its own (:class:`QuickstartConfig`); both run the checks of
    :meth:`__post_init__`, and :meth:`train_config` turns a subclass back into the plain
    settings of a run."""

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
    lora_targets: list[str] = field(
        default_factory=list,
        metadata={
            "help": "adapt only the language model's Linears with these names (the last part "
            "of the module path, e.g. q_proj v_proj); the paper adapts every Linear",
            "default_text": "every Linear",
        },
    )
    gradient_checkpointing: bool = field(
        default=True,
        metadata={"help": "recompute activations in the backward pass to save memory"},
    )
    precision: Literal["auto", "bf16", "fp32"] = field(
        default="auto",
        metadata={
            "help": "auto: bf16 where the device computes it fast (CUDA with bf16; CPUs with "
            "AMX or AVX-512 bf16), else fp32. bf16 stores the frozen base in bf16 and runs "
            "under bf16 autocast; LoRA weights and optimiser state stay float32"
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
        """The names of the settings, in declaration order (a subclass's derived fields, which
        ``__init__`` does not take, left out)."""
        return [f.name for f in dataclasses.fields(cls) if f.init]

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


def _redefault(name: str, default: Any, **metadata: Any) -> Any:
    """A :class:`TrainConfig` field redeclared in a recipe's subclass with another ``default``:
    it keeps its help, and ``metadata`` adds to or replaces the rest (a ``default_text`` written
    for the old default is dropped)."""
    kept = dict(TrainConfig.__dataclass_fields__[name].metadata)
    kept.pop("default_text", None)
    if isinstance(default, tuple):  # a list field: a fresh list per instance
        return field(default_factory=lambda: list(default), metadata={**kept, **metadata})
    return field(default=default, metadata={**kept, **metadata})


#: The Linears the quickstart's (and the shipped ``lco-mini``'s) adapter trains: attention only.
QUICKSTART_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass
class QuickstartConfig(TrainConfig):
    """The quickstart's run (``lcoemb quickstart``): text-only LCO training on LCO-Mini's
    generative stage with a laptop's budget, then retrieval and embedding-space analysis.

    The training settings are :class:`TrainConfig`'s with the quickstart's defaults; four are
    derived from the others (not arguments): ``mini_batch_size`` = 3 × ``batch_size`` (anchors,
    positives and negatives in one forward: nothing for GradCache to save), ``warmup_steps`` =
    ``max_steps`` // 10 (at least 1), ``lora_alpha`` = 2 × ``lora_r`` and ``save_steps`` =
    ``max_steps``. ``output`` is the quickstart's folder (report, tables, plots); the run itself
    trains in ``output/lco`` (:func:`lcoemb.recipes.quickstart.train_text_adapter` sets it, with
    the generated data and the resolved base, through :meth:`TrainConfig.train_config`)."""

    model: str = _redefault(
        "model", "lco-mini-base", help="generative-stage backbone", flag="--base"
    )
    output: str = field(
        default="lcoemb-quickstart",
        metadata={
            "help": "folder for report.json, the tables and plots; the adapter trains in OUTPUT/lco"
        },
    )
    max_steps: int = _redefault("max_steps", 60, help="text-only training steps", flag="--steps")
    batch_size: int = _redefault("batch_size", 16)
    mini_batch_size: int = field(init=False)
    #: low enough that the adapter keeps the base's generation (measured in
    #: docs/results/lco-mini/sweep: 2e-4 and 1e-3 lose caption and ASR output)
    lr: float = _redefault("lr", 1e-4)
    warmup_steps: int = field(init=False)
    temperature: float = _redefault("temperature", 0.05)
    lora_r: int = _redefault("lora_r", 16)
    lora_alpha: int = field(init=False)
    #: the attention projections only: at lr 1e-4 they keep >= 92 % of every stage-1 task's
    #: generation (100 items per task) where every Linear kept 89.7 % of wide-scene captions,
    #: and they retrieve better in distribution (docs/results/lco-mini/sweep)
    lora_targets: list[str] = _redefault("lora_targets", QUICKSTART_LORA_TARGETS)  # noqa: RUF009
    #: no LoRA dropout: on CPU its random masks cost as much as the model's matmuls, and a
    #: 60-step run has nothing to regularise
    lora_dropout: float = _redefault("lora_dropout", 0.0)
    gradient_checkpointing: bool = _redefault("gradient_checkpointing", False)
    save_steps: int = field(init=False)
    #: a rerun of the demo into the same folder retrains from scratch
    overwrite: bool = _redefault("overwrite", True)
    seed: int = _redefault("seed", 0)
    device: str | None = _redefault("device", "cpu")
    corpus: Literal["general", "wordnet", "in-domain"] = field(
        default="general",
        metadata={
            "help": "the text-only triplets: general (open-vocabulary sentences with light-edit "
            "positives and lexically close negatives, lcoemb.synthetic.general; the paper's "
            "setting), wordnet (general plus WordNet: synonym positives, sibling-concept "
            "negatives and 30 % dictionary entries; needs the wordnet-base package; measured "
            "worse at this budget) or in-domain (descriptions in the evaluation's own attribute "
            "grammar, lcoemb.synthetic.triplets: supervision of the test world through text)",
        },
    )
    n_triplets: int = field(default=4000, metadata={"help": "text-only triplets generated"})
    n_eval: int = field(default=50, metadata={"help": "held-out items per retrieval set"})
    n_ood: int = field(
        default=40,
        metadata={
            "help": "items (candidates) per out-of-distribution set (image, OCR, speech, "
            "video), all with distinct texts"
        },
    )
    n_analysis: int = field(
        default=50, metadata={"help": "pairs per modality for the embedding-space analysis"}
    )
    k: int = field(default=10, metadata={"help": "neighbours for mutual kNN"})

    def __post_init__(self) -> None:
        if self.corpus not in ("general", "wordnet", "in-domain"):
            raise ValueError(f"corpus must be general, wordnet or in-domain, got {self.corpus!r}")
        self.mini_batch_size = 3 * self.batch_size
        self.warmup_steps = max(1, self.max_steps // 10)
        self.lora_alpha = 2 * self.lora_r
        self.save_steps = self.max_steps
        super().__post_init__()


#: The variants of the calibration ablation (:class:`AblationConfig`), in the table's order:
#: text-only triplets, text mixed with multimodal calibration pairs, calibration pairs alone,
#: and the base without training.
ABLATION_VARIANTS = ("text-only", "mix", "multimodal-only", "none")


@dataclass
class AblationConfig(QuickstartConfig):
    """The calibration ablation (``lcoemb mini ablation``): the paper's comparison of text-only
    LCO training against text mixed with multimodal calibration pairs, calibration pairs alone
    and no training, at LCO-Mini's scale (:func:`lcoemb.recipes.ablation.ablation`).

    A :class:`QuickstartConfig`, so every trained variant gets the quickstart's budget (steps,
    batch, LoRA, learning rate) and its text corpus and evaluation sizes; the fields added here
    say which variants run, how the calibration pairs are drawn and how much generation is
    scored. Each run trains in ``output/runs/VARIANT``."""

    output: str = field(
        default="lcoemb-ablation",
        metadata={
            "help": "folder for ablation.json, ablation.md, the generated data and the runs "
            "(OUTPUT/runs/VARIANT)"
        },
    )
    max_steps: int = _redefault(
        "max_steps",
        QuickstartConfig.max_steps,
        help="training steps of each trained variant",
        flag="--steps",
    )
    variants: list[str] = field(
        default_factory=lambda: list(ABLATION_VARIANTS),
        metadata={"help": "the variants to run: " + ", ".join(ABLATION_VARIANTS)},
    )
    n_multimodal: int = field(
        default=1000,
        metadata={
            "help": "multimodal calibration triplets generated (caption or transcript → its "
            "media, another sample's media as negative), shared out over --calibration-tasks"
        },
    )
    calibration_tasks: list[str] = field(
        default_factory=lambda: ["scene_wide", "words", "utterance", "clip_wide"],
        metadata={
            "help": "the stage-1 generators whose train split the calibration pairs come from"
        },
    )
    multimodal_weight: float = field(
        default=0.2,
        metadata={"help": "the calibration pairs' share of the mix variant (text gets the rest)"},
    )
    n_generation: int = field(
        default=10,
        metadata={"help": "held-out samples per task for the generation kept by each adapter"},
    )
    generation_tasks: list[str] = field(
        default_factory=lambda: list(PRETRAIN_TASKS),
        metadata={"help": "the tasks whose generation each adapter is scored on"},
    )

    def __post_init__(self) -> None:
        unknown = [v for v in self.variants if v not in ABLATION_VARIANTS]
        if unknown or not self.variants:
            raise ValueError(
                f"variants must be among {', '.join(ABLATION_VARIANTS)}, got {self.variants}"
            )
        for name in ("calibration_tasks", "generation_tasks"):
            tasks = getattr(self, name)
            if not tasks or any(t not in PRETRAIN_TASKS for t in tasks):
                raise ValueError(f"{name} must be among {', '.join(PRETRAIN_TASKS)}, got {tasks}")
        if not 0 < self.multimodal_weight < 1:
            raise ValueError(f"multimodal_weight must be in (0, 1), got {self.multimodal_weight}")
        for name in ("n_multimodal", "n_generation"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        super().__post_init__()


# ------------------------------------------------------------------------------------ stage 1

#: The generation tasks of stage 1, in :data:`lcoemb.synthetic.TASKS`'s order: the keys of
#: :class:`PretrainConfig`'s per-task settings. Named here so that the command line checks a
#: ``TASK=VALUE`` list without importing the generators (a test keeps the two the same).
PRETRAIN_TASKS = (
    "scene",
    "ocr",
    "digit",
    "speech",
    "clip",
    "utterance",
    "words",
    "scene_wide",
    "clip_wide",
    "scene_styled",
    "clip_styled",
)

#: The projectors stage 1 can train.
PROJECTOR_NAMES = ("image", "audio", "read", "colour", "shape")


def task_values(kind: type) -> Callable[[str], dict[str, Any]]:
    """An argparse type for ``TASK=VALUE,...`` lists over :data:`PRETRAIN_TASKS`, each value
    parsed with ``kind``."""

    def parse(text: str) -> dict[str, Any]:
        out = {}
        for entry in filter(None, text.split(",")):
            task, sep, value = entry.partition("=")
            if not sep or task not in PRETRAIN_TASKS:
                raise argparse.ArgumentTypeError(
                    f"{entry!r}: expected TASK=VALUE with TASK one of {', '.join(PRETRAIN_TASKS)}"
                )
            try:
                out[task] = kind(value)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{entry!r}: {value!r} is not a number") from None
        return out

    return parse


def comma_list(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


@dataclass
class PretrainConfig:
    """Settings of one stage-1 run (``lcoemb mini pretrain``,
    :func:`lcoemb.recipes.pretrain.pretrain`); each field's help is in its metadata."""

    output: str = field(
        default="",
        metadata={
            "help": "folder for the model (config.json, projectors.safetensors), its "
            "checkpoints, pretrain_log.jsonl and pretrain_report.json",
            "required": True,
        },
    )
    steps: int = field(default=1500, metadata={"help": "optimiser steps"})
    batch_size: int = field(default=16, metadata={"help": "examples per step"})
    lr: float = field(
        default=1e-3, metadata={"help": "peak learning rate (linear warm-up, cosine decay)"}
    )
    warmup_steps: int = field(default=50, metadata={"help": "linear warm-up steps"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    train_size: dict[str, int] = field(
        default_factory=lambda: {
            "scene": 2000,
            "ocr": 1500,
            "digit": 1000,
            "speech": 1500,
            "clip": 800,
            "utterance": 6000,
            "words": 3000,
            "scene_wide": 2500,
            "clip_wide": 1500,
            "scene_styled": 2500,
            "clip_styled": 1500,
        },
        metadata={"help": "TASK=N,... training examples per task", "type": task_values(int)},
    )
    task_weights: dict[str, float] = field(
        default_factory=lambda: {
            "scene": 0.10,
            "ocr": 0.08,
            "digit": 0.04,
            "speech": 0.08,
            "clip": 0.06,
            "utterance": 0.25,
            "words": 0.17,
            "scene_wide": 0.14,
            "clip_wide": 0.08,
            "scene_styled": 0.14,
            "clip_styled": 0.08,
        },
        metadata={
            "help": "TASK=W,... sampling weights over "
            + ",".join(PRETRAIN_TASKS)
            + " (others keep their defaults; 0 leaves a task out)",
            "type": task_values(float),
        },
    )
    eval_size: int = field(
        default=100,
        metadata={
            "help": "held-out samples per task for the generation scores of the report; 0 "
            "skips scoring (the report's scores are then empty)"
        },
    )
    seed: int = field(
        default=0, metadata={"help": "seed for the projectors' initialisation and the batches"}
    )
    log_steps: int = field(default=10, metadata={"help": "write pretrain_log.jsonl every N steps"})
    cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "keep the frozen tower features here, to reuse in later runs",
            "default_text": "none: recompute them every run",
        },
    )
    bf16: bool | None = field(
        default=None,
        metadata={
            "help": "keep the frozen LM in bf16 (fast on CPUs with AMX, and no per-step weight "
            "casts as under autocast); the projectors and their optimiser state stay float32",
            "default_text": "where the CPU computes bf16 fast (AMX, AVX-512 bf16), else float32",
        },
    )
    save_steps: int = field(
        default=100,
        metadata={
            "help": "checkpoint every N steps (atomic: projectors, optimiser, schedule, "
            "sampler state)"
        },
    )
    resume: bool = field(
        default=False,
        metadata={"help": "continue from the newest complete checkpoint in OUTPUT/checkpoints"},
    )
    #: None keeps all (the command line's 0)
    keep_checkpoints: int | None = field(
        default=2,
        metadata={
            "help": "newest checkpoints kept (0 keeps all: each is a smaller-budget variant)"
        },
    )
    reading: bool = field(
        default=True,
        metadata={
            "help": "give images reading tokens (EasyOCR's detector and recogniser, "
            "lcoemb.mini.reader); --no-reading as in the shipped base's first stage-1 run"
        },
    )
    transcript_tokens: int | None = field(
        default=None,
        metadata={
            "help": "embed a clip in which Whisper tiny.en hears speech as its transcript, at most "
            "N LM tokens, instead of its audio tokens (lcoemb.mini.model.LCOMini.embed_audio); "
            "0 = audio tokens only. The audio projector learns nothing from a clip embedded as "
            "its transcript, so stage 1 leaves this off (the shipped base does not transcribe)",
            "default_text": "the base's own; 0 from scratch",
        },
    )
    colour_bins: int = field(
        default=0,
        metadata={
            "help": "add to each image token the projection of its grid cell's RGB colour "
            "histogram, N bins per channel (lcoemb.mini.towers.ImageTower.colours); on a --base "
            "without one the colour projector starts at zero, so train it with --train "
            "image,colour; 0 = none (a base that has one keeps it)"
        },
    )
    shapes: bool = field(
        default=False,
        metadata={
            "help": "add to each image token the projection of the shape descriptors of the "
            "objects centred in its grid cell (lcoemb.mini.silhouettes: silhouettes whose "
            "outline's Fourier magnitudes do not depend on the style, size or rotation); on a "
            "--base without them the shape projector starts at zero, so train it with --train "
            "image,colour,shape (a base that has one keeps it)"
        },
    )
    image_feature_dropout: float = field(
        default=0.0,
        metadata={
            "help": "share of image and video training examples (of a model with colour or "
            "shape extras) whose EfficientNet features are zeroed in a step, so that the "
            "projectors learn to describe a picture from its colour and shape extras alone "
            "(modality dropout); 0 = never"
        },
    )
    train: list[str] = field(
        default_factory=lambda: list(PROJECTOR_NAMES),
        metadata={
            "help": "projectors that learn, comma-separated from image,audio,read,colour,shape; "
            "the others stay as loaded; e.g. --base OLD --train read adds reading to a model "
            "trained without it",
            "type": comma_list,
            "default_text": "all",
        },
    )
    lm_lora_r: int = field(
        default=0,
        metadata={
            "help": "rank of a LoRA on the LM's decoder Linears trained along with the "
            "projectors (alpha = 2 x rank), so a small LM learns to use media tokens rather "
            "than paraphrase around them; merged into the LM when the model loads; 0 keeps "
            "the LM frozen"
        },
    )
    lm_lora_lr: float = field(
        default=2e-4, metadata={"help": "peak learning rate of the LM LoRA (same schedule)"}
    )

    def __post_init__(self) -> None:
        if self.eval_size < 0:
            raise ValueError(f"eval_size must be >= 0, got {self.eval_size}")
        if not 0.0 <= self.image_feature_dropout < 1.0:
            raise ValueError(
                f"image_feature_dropout must be in [0, 1), got {self.image_feature_dropout}"
            )


# ------------------------------------------------------------------------------------ serving


@dataclass(frozen=True)
class ServeConfig:
    """Everything ``lcoemb serve`` takes; see ``lcoemb serve --help``."""

    # model, adapter, device and dtype: the options of every command that loads a model
    model: str = DEFAULT_MODEL
    adapter: str | None = None
    device: str | None = None
    dtype: str | None = None
    host: str = field(default="127.0.0.1", metadata={"help": "address to bind"})
    port: int = field(default=8000, metadata={"help": "port"})
    max_batch_size: int = field(default=32, metadata={"help": "items per model batch"})
    max_wait_ms: float = field(
        default=0.0,
        metadata={
            "help": "how long an item may wait for a fuller batch; at 0 a batch starts as soon "
            "as the model is free, with every compatible item waiting by then"
        },
    )
    max_queue: int = field(default=1024, metadata={"help": "queued items before 429"})
    max_items_per_request: int = field(
        default=256, metadata={"help": "items in one request; more get 400"}
    )
    max_body_mb: float = field(
        default=32.0, metadata={"help": "request body limit in MB; larger bodies get 413"}
    )
    max_text_chars: int = field(
        default=100_000, metadata={"help": "characters per text; longer texts get 400"}
    )
    max_image_pixels: int = field(
        default=4096 * 4096, metadata={"help": "pixels per image; larger images get 400"}
    )
    api_key: str | None = field(
        default=None,
        metadata={
            "help": "require Authorization: Bearer KEY on /v1",
            "default_text": "$LCOEMB_API_KEY, else none",
        },
    )
    media_root: Path | None = field(
        default=None,
        metadata={"help": "allow file:// and plain paths to media under this folder only"},
    )
    cors_origins: tuple[str, ...] = field(
        default_factory=tuple,
        metadata={
            "help": "allow this browser origin; repeat the flag for more",
            "flag": "--cors-origin",
        },
    )
    allow_url_fetch: bool = field(
        default=False,
        metadata={
            "help": "fetch http(s) media URLs that clients send; the server then reaches any "
            "address a client names, internal ones included, so enable it only where that is "
            "acceptable"
        },
    )
    max_fetch_mb: float = field(
        default=32.0, metadata={"help": "size cap of one fetched URL in MB; larger get 400"}
    )
    fetch_timeout_s: float = field(
        default=10.0, metadata={"help": "time cap of one fetched URL in seconds; slower get 400"}
    )
    index: Path | None = field(
        default=None,
        metadata={
            "help": "an index folder built with the served model (and adapter): adds POST "
            "/v1/search, GET /v1/media/ID and a search page at /; without --dtype the model "
            "then computes in the index's dtype"
        },
    )
