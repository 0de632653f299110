"""Out-of-distribution retrieval sets of open text: held-out speech and held-out words.

Retrieval over a set scores a query right only if its one correct document ranks first, so a set
must not hold two samples with the same text (``"Null"`` and ``"NULL"`` read the same to a
model that is asked to match words). :func:`ood_text_set` keeps the first samples of the test
split whose texts differ case-insensitively from every earlier one; the set is therefore a pure
function of ``(kind, n)``, like every generated sample.
"""

from __future__ import annotations

from collections.abc import Callable

from lcoemb.synthetic.ocr import ood_ocr
from lcoemb.synthetic.samples import AnySample
from lcoemb.synthetic.speech import ood_speech

#: The generators of the open-text OOD sets, by kind.
OOD_TEXT_KINDS: dict[str, Callable[[int, str], AnySample]] = {
    "ood_speech": ood_speech,
    "ood_ocr": ood_ocr,
}
#: How many indices per wanted sample are tried before the corpus is deemed too small.
_TRIES_PER_SAMPLE = 20


def ood_text_set(kind: str, n: int = 40) -> list[AnySample]:
    """The first ``n`` test samples of ``kind`` (``"ood_speech"`` or ``"ood_ocr"``) with pairwise
    distinct texts (case-insensitive)."""
    if kind not in OOD_TEXT_KINDS:
        raise ValueError(f"kind must be one of {tuple(OOD_TEXT_KINDS)}, got {kind!r}")
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    generate = OOD_TEXT_KINDS[kind]
    kept: dict[str, AnySample] = {}
    for index in range(_TRIES_PER_SAMPLE * n):
        if len(kept) == n:
            break
        sample = generate(index, "test")
        kept.setdefault(sample.text.lower(), sample)
    if len(kept) < n:
        raise RuntimeError(
            f"{kind}: fewer than {n} distinct texts in {_TRIES_PER_SAMPLE * n} tries"
        )
    return list(kept.values())
