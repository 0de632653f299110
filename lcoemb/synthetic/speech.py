"""Speech samples (ASR): espeak-ng reading captions and lines of words.

``speech``: espeak-ng reads a canonical scene caption (50 %), a clip caption (25 %) or a
lower-case line of 2-4 :data:`~lcoemb.synthetic.descriptions.WORDS` (25 %) with one of
:data:`VOICES`, speed ``-s`` 130-190 words per minute, pitch ``-p`` 35-65 and amplitude ``-a``
75; the 22.05 kHz int16 output is resampled to 16 kHz float32
(:data:`lcoemb.inputs.TARGET_SAMPLING_RATE`) with ``torchaudio.functional.resample``. Durations
are about 0.7-3 s. Train speeds are even and test speeds odd, so the two splits never share a
waveform. Bytes are reproducible given the same espeak-ng (:func:`espeak_version`); the float
waveform after resampling may differ in the last bits across CPUs.
"""

from __future__ import annotations

import os
import subprocess
import tempfile

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional

from lcoemb.inputs import TARGET_SAMPLING_RATE
from lcoemb.synthetic.descriptions import canonical, ocr_line, parse_description, random_attrs
from lcoemb.synthetic.samples import AudioSample
from lcoemb.synthetic.seeds import SPLIT_IDS, choice, sample_rng

#: espeak-ng voices (all built in, each checked to sound different).
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en+f3", "en-us+f2", "en+m3")


def espeak_version() -> str:
    """The ``espeak-ng --version`` line (speech bytes are reproducible for the same one)."""
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def synthesize(
    text: str, voice: str = "en-us", speed: int = 160, pitch: int = 50, amplitude: int = 75
) -> np.ndarray:
    """``text`` spoken by espeak-ng, as 16 kHz mono float32 in [-1, 1].

    ``amplitude`` is espeak-ng's ``-a`` (its default, 100, peaks at full scale, and resampling
    then overshoots 1.0); 75 keeps peaks near 0.85.
    """
    with tempfile.TemporaryDirectory(prefix="lcoemb-espeak-") as folder:
        path = os.path.join(folder, "speech.wav")
        command = ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch)]
        command += ["-a", str(amplitude), "-w", path]
        try:
            subprocess.run([*command, text], capture_output=True, check=True, timeout=60)
        except FileNotFoundError as e:
            raise RuntimeError("espeak-ng not found; install it (apt-get install espeak-ng)") from e
        except subprocess.CalledProcessError as e:
            raise RuntimeError(f"espeak-ng failed: {e.stderr.decode(errors='replace')}") from e
        wave, rate = sf.read(path, dtype="float32", always_2d=True)
    wave = torch.from_numpy(wave.mean(axis=1))
    if rate != TARGET_SAMPLING_RATE:
        wave = torchaudio.functional.resample(wave, rate, TARGET_SAMPLING_RATE)
    return np.clip(wave.numpy(), -1.0, 1.0).astype(np.float32, copy=False)


def _speech_text(rng: np.random.Generator) -> str:
    source = float(rng.random())
    if source < 0.5:
        return canonical(random_attrs(rng, "scene"))
    if source < 0.75:
        return canonical(random_attrs(rng, "clip"))
    return " ".join(ocr_line(rng, 2, 4))


def speech(index: int, split: str = "train") -> AudioSample:
    """Speech ``index`` of ``split``: espeak-ng reading a caption or a line of words."""
    rng = sample_rng("speech", split, index)
    text = _speech_text(rng)
    voice = choice(rng, VOICES)
    # Even speeds for train, odd for test: the two splits never share a waveform.
    speed = 130 + 2 * int(rng.integers(30)) + SPLIT_IDS[split]
    pitch = int(rng.integers(35, 66))
    wave = synthesize(text, voice, speed, pitch)
    meta = {"kind": "speech", "split": split, "index": int(index)}
    meta |= {"voice": voice, "speed": speed, "pitch": pitch}
    return AudioSample(wave, TARGET_SAMPLING_RATE, text, parse_description(text), meta)
