"""Speech samples (ASR): espeak-ng reading captions and lines of words.

``speech``: espeak-ng reads a canonical scene caption (50 %), a clip caption (25 %) or a
lower-case line of 2-4 :data:`~lcoemb.synthetic.descriptions.WORDS` (25 %) with one of
:data:`VOICES`, speed ``-s`` 130-190 words per minute, pitch ``-p`` 35-65 and amplitude ``-a``
75; the 22.05 kHz int16 output is resampled to 16 kHz float32
(:data:`lcoemb.inputs.TARGET_SAMPLING_RATE`) with ``torchaudio.functional.resample``. Durations
are about 0.7-3 s. Train speeds are even and test speeds odd, so the two splits never share a
waveform. Bytes are reproducible given the same espeak-ng (:func:`espeak_version`); the float
waveform after resampling may differ in the last bits across CPUs.

Eight voices and 413 words cannot tell listening from recognising memorised captions, so two more
generators speak open text from :mod:`~lcoemb.synthetic.corpus` with many more voices:

* ``utterance`` (stage 1): a sentence of ``corpus.sentences("stage1")`` spoken by one of
  :data:`UTTERANCE_VOICES` (espeak-ng's built-in English accents) with, 80 % of the time, one of
  :data:`UTTERANCE_VARIANTS` (espeak-ng's voice variants, ``voice+variant``: other genders,
  ages, timbres, the Klatt synthesiser), speed 120-211, pitch 20-80; even speeds for train, odd
  for test, as above.
* ``ood_speech`` (evaluation only): a sentence of ``corpus.sentences("eval")``, never spoken in
  training, by one of :data:`HELD_OUT_VOICES` with, 80 % of the time, one of
  :data:`HELD_OUT_VARIANTS`; ``utterance`` never uses either, so every OOD voice is unheard.

The voice tables are for espeak-ng 1.51 (Debian 12). espeak-ng silently ignores a variant it
does not know, and ignores every variant after ``en-gb`` (hence the British base is named
``en``, the same voice); ``mb/`` (MBROLA) voices need MBROLA and are not used. Left out of all
tables: ``Mr`` and ``fast`` (they sound exactly like the base voice once the speed is given),
``caleb`` and ``klatt6`` (they sound exactly like ``klatt``), and ``Andy``, ``AnxiousAndy``,
``anikaRobot``, ``ed``, ``grandma``, ``kaukovalta``, ``Lee``, ``RicishayMax`` 1-3, ``shelby``
and ``Tweaky`` (Whisper tiny.en gets most words of them wrong: the transcript would teach
noise). The held-out variants are whole families (``iven`` 1-4, ``steph`` 1-3) and singletons,
about a fifth of the rest. ``text`` is the sentence exactly as spoken; ``attrs`` is only
``{"kind": ...}`` (:func:`~lcoemb.synthetic.parse_description` knows only the closed grammar).
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
from lcoemb.synthetic import corpus
from lcoemb.synthetic.descriptions import canonical, ocr_line, parse_description, random_attrs
from lcoemb.synthetic.samples import AudioSample
from lcoemb.synthetic.seeds import SPLIT_IDS, choice, sample_rng

#: espeak-ng voices (all built in, each checked to sound different).
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en+f3", "en-us+f2", "en+m3")
#: espeak-ng's built-in English voices of open-vocabulary utterances (``en`` is ``en-gb``).
UTTERANCE_VOICES = ("en-us", "en", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-029")
#: espeak-ng voice variants (``espeak-ng --voices=variant``) of open-vocabulary utterances.
UTTERANCE_VARIANTS = (
    "adam", "Alex", "Alicia", "Andrea", "announcer", "antonio", "anika", "aunty", "benjamin",
    "boris", "croak", "david", "Demonic", "Denis", "edward", "edward2", "f1", "f2", "f3",
    "Gene", "Gene2", "grandpa", "Henrique", "Jacky", "john", "klatt", "klatt2", "klatt3",
    "klatt4", "klatt5", "linda", "m1", "m2", "m3", "m4", "m5", "m8", "marcelo", "Marco",
    "Mario", "max", "michel", "miguel", "Mike", "Nguyen", "norbert", "pablo", "paul", "pedro",
    "rob", "robert", "robosoft", "robosoft2", "robosoft3", "robosoft4", "robosoft5", "robosoft6",
    "robosoft7", "robosoft8", "sandro", "Storm", "travis", "UniRobot", "whisper", "whisperf",
    "zac",
)  # fmt: skip
#: Voices and variants only the out-of-distribution speech set uses.
HELD_OUT_VOICES = ("en-us-nyc", "en-gb-x-gbcwmd")
HELD_OUT_VARIANTS = (
    "Annie", "belinda", "Diogo", "f4", "f5", "gustave", "Hugo", "iven", "iven2", "iven3",
    "iven4", "m6", "m7", "Michael", "quincy", "steph", "steph2", "steph3", "victor",
)  # fmt: skip
#: Share of open-text samples spoken with a variant (the rest: the plain base voice).
_VARIANT_SHARE = 0.8


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


def _open_speech(
    kind: str,
    split: str,
    index: int,
    partition: str,
    voices: tuple[str, ...],
    variants: tuple[str, ...],
) -> AudioSample:
    rng = sample_rng(kind, split, index)
    text = choice(rng, corpus.sentences(partition))
    base = choice(rng, voices)
    variant = choice(rng, variants) if rng.random() < _VARIANT_SHARE else ""
    voice = f"{base}+{variant}" if variant else base
    # Even speeds for train, odd for test: the two splits never share a waveform.
    speed = 120 + 2 * int(rng.integers(46)) + SPLIT_IDS[split]
    pitch = int(rng.integers(20, 81))
    wave = synthesize(text, voice, speed, pitch)
    meta = {"kind": kind, "split": split, "index": int(index), "voice": voice, "base": base}
    meta |= {"variant": variant, "speed": speed, "pitch": pitch}
    return AudioSample(wave, TARGET_SAMPLING_RATE, text, {"kind": kind}, meta)


def utterance(index: int, split: str = "train") -> AudioSample:
    """Utterance ``index`` of ``split``: a stage-1 sentence spoken by a training voice."""
    return _open_speech("utterance", split, index, "stage1", UTTERANCE_VOICES, UTTERANCE_VARIANTS)


def ood_speech(index: int, split: str = "test") -> AudioSample:
    """Out-of-distribution speech ``index``: a held-out sentence spoken by a held-out voice,
    neither ever heard in training."""
    return _open_speech("ood_speech", split, index, "eval", HELD_OUT_VOICES, HELD_OUT_VARIANTS)
