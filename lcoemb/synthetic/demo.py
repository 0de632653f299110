"""A small mixed folder of generated files to index and search (``lcoemb mini demo-folder``)."""

from __future__ import annotations

import os
from pathlib import Path

import soundfile as sf

from lcoemb.synthetic.clips import clip, mp4_bytes
from lcoemb.synthetic.scenes import scene
from lcoemb.synthetic.speech import speech
from lcoemb.synthetic.triplets import text_triplet


def write_demo_folder(
    folder: str | os.PathLike[str], n: int = 4, split: str = "test"
) -> dict[str, list[tuple[Path, str]]]:
    """A small mixed collection to index and search: ``n`` scene images (PNG), speech clips
    (WAV), moving-shape clips (MP4) and text notes (TXT) of ``split``, in one folder per kind.

    Returns, per modality, each file with a text query that should find it: the image's caption,
    the speech's transcript, the clip's description, and a paraphrase of the note.
    """
    root = Path(folder)
    out: dict[str, list[tuple[Path, str]]] = {m: [] for m in ("image", "audio", "video", "text")}
    for sub in ("images", "speech", "clips", "notes"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        sample = scene(i, split)
        sample.image.save(root / "images" / f"scene-{i}.png")
        out["image"].append((root / "images" / f"scene-{i}.png", sample.text))
        said = speech(i, split)
        sf.write(root / "speech" / f"speech-{i}.wav", said.wave, said.sampling_rate)
        out["audio"].append((root / "speech" / f"speech-{i}.wav", said.text))
        moving = clip(i, split)
        path = root / "clips" / f"clip-{i}.mp4"
        path.write_bytes(mp4_bytes(moving.frames, moving.fps, crf=None))
        out["video"].append((path, moving.text))
        note = text_triplet(i, split)
        (root / "notes" / f"note-{i}.txt").write_text(note.anchor + "\n")
        out["text"].append((root / "notes" / f"note-{i}.txt", note.positive))
    return out
