"""DeepSpeed ZeRO for the trainer (optional: ``pip install deepspeed``).

GradCache runs one backward per chunk and wants a single optimiser step per global batch, so
the trainer owns gradient accumulation: the engine is configured with
``managed_gradient_accumulation: false`` (each ``engine.backward`` only accumulates, and
``engine.step`` is the boundary that reduces, clips and updates) and the chunk losses are not
rescaled (``scale_wrt_gas=False``: GradCache's surrogate losses already carry exact gradients).
ZeRO stage 2 partitions the optimiser state and the reduced gradients of the LoRA parameters
across processes; the frozen base weights are untouched.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import torch

#: the built-in configuration behind ``--deepspeed zero2``
ZERO2: dict[str, Any] = {
    "zero_optimization": {
        "stage": 2,
        "overlap_comm": False,
        "contiguous_gradients": True,
        "reduce_scatter": True,
    },
    "zero_allow_untested_optimizer": True,  # the trainer's torch AdamW
}
CHECKPOINT_TAG = "deepspeed"


def deepspeed_config(
    spec: str, *, micro_batch: int, world: int, max_grad_norm: float | None, bf16: bool
) -> dict[str, Any]:
    """The engine configuration for ``spec`` (``zero2`` or a JSON file), with the settings the
    trainer owns (batch sizes, accumulation, clipping, precision) filled in. A file that sets
    one of those differently is an error, not silently overridden."""
    if spec == "zero2":
        user: dict[str, Any] = json.loads(json.dumps(ZERO2))
    else:
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"DeepSpeed config not found: {spec} (or use 'zero2')")
        try:
            user = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{spec}: not valid JSON ({error.msg}, line {error.lineno})") from None
    owned: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "train_batch_size": micro_batch * world,
        "gradient_accumulation_steps": 1,
        "managed_gradient_accumulation": False,
        "gradient_clipping": max_grad_norm or 0.0,
        "bf16": {"enabled": bf16},
    }
    for key, value in owned.items():
        if key in user and user[key] not in ("auto", value):
            raise ValueError(
                f"DeepSpeed config {spec}: {key}={user[key]!r} conflicts with the trainer's "
                f"{value!r}; remove it (the trainer sets it from --batch-size and friends)"
            )
    stage = user.get("zero_optimization", {}).get("stage", 0)
    if stage == 3:
        raise ValueError(f"DeepSpeed config {spec}: ZeRO stage 3 is not supported; use 1 or 2")
    return {**user, **owned}


def _ensure_process_group() -> None:
    """DeepSpeed needs torch.distributed; a single process started without torchrun gets a
    one-member group (gloo on CPU) instead of DeepSpeed's MPI discovery."""
    if torch.distributed.is_initialized():
        return
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    torch.distributed.init_process_group(backend)


def initialize(model: Any, optimizer: Any, scheduler: Any, config: dict[str, Any]) -> Any:
    """A DeepSpeed engine around the peft model, the trainer's optimiser and schedule."""
    try:  # an optional dependency (pip install lcoemb[deepspeed]), imported only when used
        import deepspeed
    except ImportError as error:
        raise ImportError("--deepspeed needs DeepSpeed: pip install deepspeed") from error
    _ensure_process_group()
    engine, *_ = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config
    )
    return engine


def save(engine: Any, folder: Path) -> None:
    """Collective: every process writes its optimiser partition under ``folder``."""
    engine.save_checkpoint(
        str(folder), tag=CHECKPOINT_TAG, save_latest=False, exclude_frozen_parameters=True
    )


def load(engine: Any, folder: Path) -> None:
    """Collective: restore the LoRA weights, optimiser partitions and schedule."""
    path, _ = engine.load_checkpoint(
        str(folder), tag=CHECKPOINT_TAG, load_module_strict=False, load_lr_scheduler_states=True
    )
    if path is None:
        raise FileNotFoundError(f"{folder} holds no DeepSpeed checkpoint ({CHECKPOINT_TAG}/)")
