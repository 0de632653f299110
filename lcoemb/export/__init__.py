"""Exports of a model to other libraries' formats.

* :func:`export_sentence_transformers` writes a folder that
  ``sentence_transformers.SentenceTransformer(folder)`` loads and whose ``encode`` gives
  :class:`~lcoemb.OmniEncoder`'s vectors (``lcoemb export --format sentence-transformers``).
"""

from __future__ import annotations

from lcoemb.export.sentence_transformers import (
    EXPORTABLE_FAMILIES,
    REFUSED_FAMILIES,
    ExportError,
    export_sentence_transformers,
    lco_chat_template,
)

#: ``lcoemb export --format`` choices and what each writes.
FORMATS = {"sentence-transformers": export_sentence_transformers}

__all__ = [
    "EXPORTABLE_FAMILIES",
    "FORMATS",
    "REFUSED_FAMILIES",
    "ExportError",
    "export_sentence_transformers",
    "lco_chat_template",
]
