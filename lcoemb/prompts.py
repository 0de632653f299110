"""Per-modality prompt suffixes and the user turn an item becomes.

LCO-EMB pools the last token of a prompt that asks the model to summarise its input "in one
word" (after E5-V): the generative model compresses the input into the next-token state, and
that state is the embedding (pooled by :mod:`lcoemb.pooling`). The suffix names the modality,
so it is part of the recipe.

:func:`build_content` is the one place a user turn is built, for embedding (the suffix) and for
generation (the generation prompt) alike. Each backbone applies its own chat template to it
(:meth:`lcoemb.backbones.Backbone.prompt`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lcoemb.inputs import CONTENT_ORDER, LoadedItem, Modality

SUFFIXES: dict[str, str] = {
    "text": "\nSummarize the above text in one word:",
    "image": "\nSummarize the above image in one word:",
    "audio": "\nSummarize the above audio in one word:",
    "video": "\nSummarize the above video in one word:",
    "interleaved": "\nSummarize the above in one word:",
}

__all__ = ["CONTENT_ORDER", "SUFFIXES", "build_content", "build_messages", "suffix_for"]

#: Which modality names the suffix when several are present (the authors' template).
SUFFIX_PRIORITY: tuple[Modality, ...] = ("image", "video", "audio")


def suffix_for(item: LoadedItem, suffixes: Mapping[str, str] = SUFFIXES) -> str:
    """The suffix of an item, from ``suffixes`` (keyed like :data:`SUFFIXES`; a backbone family
    may use its published embedder's wording). An interleaved list gets the generic suffix; a
    single part (or a reference-style composite) names the first of image > video > audio
    present, else text."""
    if item.interleaved:
        return suffixes["interleaved"]
    present = set(item.modalities)
    return suffixes[next((m for m in SUFFIX_PRIORITY if m in present), "text")]


def build_content(
    item: LoadedItem,
    instruction: str | None = None,
    *,
    suffix: str | None = None,
    suffixes: Mapping[str, str] = SUFFIXES,
) -> list[dict[str, Any]]:
    """The user turn's content list for ``item``; media values are placeholders (the processor
    receives the decoded media separately, in the same order).

    The parts come in the item's order: a composite's were put in :data:`CONTENT_ORDER` when it
    was loaded, an interleaved list keeps the user's. An ``instruction`` (query-side tasks) comes
    first, on its own line. ``suffix`` ends the turn: the item's one-word-summary suffix
    (:func:`suffix_for` over ``suffixes``) by default, the prompt when generating.
    """
    content: list[dict[str, Any]] = []
    if instruction:
        content.append({"type": "text", "text": f"{instruction}\n"})
    for modality, value in item.parts:
        if modality == "text":
            content.append({"type": "text", "text": value})
        else:
            content.append({"type": modality, modality: "placeholder"})
    content.append(
        {"type": "text", "text": suffix_for(item, suffixes) if suffix is None else suffix}
    )
    return content


def build_messages(
    item: LoadedItem, instruction: str | None = None, *, suffix: str | None = None
) -> list[dict[str, Any]]:
    """One user turn holding the item (:func:`build_content`), ready for
    ``apply_chat_template``."""
    return [{"role": "user", "content": build_content(item, instruction, suffix=suffix)}]
