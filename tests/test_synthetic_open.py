"""Open-vocabulary stage-1 generators (utterances, words) and their out-of-distribution sets:
determinism, disjointness from everything trained on, voices and fonts that really differ, and
the closed-vocabulary generators left exactly as they were."""

from __future__ import annotations

import hashlib
import importlib

import numpy as np
import pytest

from lcoemb import synthetic as data
from lcoemb.synthetic import corpus, fonts
from lcoemb.synthetic.ocr import ood_ocr, open_ocr
from lcoemb.synthetic.ood_text import ood_text_set

# ``lcoemb.synthetic.speech`` is also the name of a function there; the module holds the tables.
speech_module = importlib.import_module("lcoemb.synthetic.speech")

#: A sentence on which every voice and variant sounds different (en-us-nyc differs from en-us
#: only on some vowels).
PROBE = "The weather is nice today."


@pytest.fixture
def silent(monkeypatch):
    """Speech generators without espeak-ng: their draws (text, voice, speed) stay the same."""
    monkeypatch.setattr(speech_module, "synthesize", lambda *a, **k: np.zeros(160, np.float32))


# --- the closed-vocabulary generators are unchanged -------------------------------------------

#: (split, index, text, voice, speed, pitch, samples, sum of |wave|), recorded before the open
#: generators were added (espeak-ng 1.51)
SPEECH_BEFORE = [
    ("train", 0, "three red circles at the top", "en-gb", 176, 42, 28473, 794.776),
    ("train", 1, "an orange star moving up", "en-gb-scotland", 156, 53, 30087, 1170.662),
    ("train", 2, "a green star moving down", "en-us+f2", 148, 39, 33828, 1540.56),
    ("test", 0, "three black crosses at the bottom", "en-029", 159, 39, 34281, 1028.43),
    ("test", 1, "three black squares at the top", "en-us", 135, 43, 40378, 1054.823),
    ("test", 2, "wood full noise", "en+m3", 155, 39, 21557, 622.867),
]
#: (split, index, text, font, sha256 of the pixels, first 16 digits)
OCR_BEFORE = [
    ("train", 0, "Money door", "DejaVuSans.ttf", "eaed88b19b54c870"),
    ("train", 1, "island join", "DejaVuSansMono-Bold.ttf", "473cf9915abe04a6"),
    ("train", 2, "narrow full dress tail", "pillow-default", "ee5eaf197dc1218a"),
    ("test", 0, "Little music", "DejaVuSerif.ttf", "a9a23668fd617e77"),
    ("test", 1, "summer monkey", "DejaVuSerif-Italic.ttf", "50db7868882605c5"),
    ("test", 2, "run grass good noise", "DejaVuSerif.ttf", "1443b65a9615285d"),
]


def test_closed_vocabulary_speech_and_ocr_are_unchanged():
    for split, index, text, voice, speed, pitch, length, level in SPEECH_BEFORE:
        sample = data.speech(index, split)
        assert (sample.text, sample.meta["voice"]) == (text, voice)
        assert (sample.meta["speed"], sample.meta["pitch"], len(sample.wave)) == (
            speed,
            pitch,
            length,
        )
        # the float waveform may differ in the last bits across CPUs (resampling)
        assert np.abs(sample.wave.astype(np.float64)).sum() == pytest.approx(level, rel=1e-4)
    for split, index, text, font, digest in OCR_BEFORE:
        sample = data.ocr(index, split)
        assert (sample.text, sample.meta["font"]) == (text, font)
        assert hashlib.sha256(sample.image.tobytes()).hexdigest()[:16] == digest


# --- determinism -------------------------------------------------------------------------------


@pytest.mark.parametrize("generate", [open_ocr, ood_ocr])
def test_word_images_are_deterministic(generate):
    for split in data.SPLITS:
        a, b, c = generate(5, split), generate(5, split), generate(6, split)
        assert a.image.tobytes() == b.image.tobytes()
        assert (a.text, a.attrs, a.meta) == (b.text, b.attrs, b.meta)
        assert a.image.tobytes() != c.image.tobytes()
        assert a.image.size == (224, 224) and a.image.mode == "RGB"
        assert a.text == " ".join(a.text.split()) and 1 <= len(a.text.split()) <= 3
        assert [a.attrs[f"word_{i}"] for i in range(len(a.text.split()))] == a.text.lower().split()


@pytest.mark.parametrize("generate", [speech_module.utterance, speech_module.ood_speech])
def test_open_speech_is_deterministic_and_plausible(generate):
    a, b = generate(3, "train"), generate(3, "train")
    assert a.wave.tobytes() == b.wave.tobytes() and (a.text, a.meta) == (b.text, b.meta)
    assert a.sampling_rate == 16_000 and a.wave.dtype == np.float32 and a.wave.ndim == 1
    assert 0.5 <= a.duration <= 10.0 and 0.05 < np.abs(a.wave).max() <= 1.0
    assert a.attrs == {"kind": a.meta["kind"]}
    assert a.meta["speed"] % 2 == 0 and generate(3, "test").meta["speed"] % 2 == 1
    assert generate(4, "train").wave.tobytes() != a.wave.tobytes()


# --- disjointness ------------------------------------------------------------------------------


def test_ood_texts_are_never_trained_on():
    eval_sentences = {s.lower() for s in corpus.sentences("eval")}
    for partition in ("stage1", "text"):
        assert not eval_sentences & {s.lower() for s in corpus.sentences(partition)}
    eval_words = set(corpus.words("eval"))
    assert not eval_words & set(corpus.words("train")) and not eval_words & set(data.WORDS)


def test_utterances_use_training_sentences_and_voices_only(silent):
    stage1 = set(corpus.sentences("stage1"))
    held_out = (set(speech_module.HELD_OUT_VOICES), set(speech_module.HELD_OUT_VARIANTS))
    bases, variants = set(), set()
    for split in data.SPLITS:
        for index in range(300):
            meta = (sample := speech_module.utterance(index, split)).meta
            assert sample.text in stage1
            assert meta["voice"] == "+".join(filter(None, (meta["base"], meta["variant"])))
            bases.add(meta["base"])
            variants.add(meta["variant"])
    assert bases == set(speech_module.UTTERANCE_VOICES)
    assert not bases & held_out[0] and not variants & held_out[1]
    assert len(variants) >= 50  # variety: most of the 66 variants within 600 samples


def test_ood_speech_uses_held_out_sentences_and_voices_only(silent):
    eval_sentences = set(corpus.sentences("eval"))
    for index in range(200):
        sample = speech_module.ood_speech(index)
        assert sample.text in eval_sentences
        assert sample.meta["base"] in speech_module.HELD_OUT_VOICES
        assert sample.meta["variant"] in ("", *speech_module.HELD_OUT_VARIANTS)
    assert not set(speech_module.UTTERANCE_VOICES) & set(speech_module.HELD_OUT_VOICES)
    assert not set(speech_module.UTTERANCE_VARIANTS) & set(speech_module.HELD_OUT_VARIANTS)


def test_word_images_use_their_vocabulary_and_fonts_only():
    open_fonts = {f for _, names in fonts.OPEN_FONT_FAMILIES.values() for f in names}
    held_out_fonts = {f for _, names in fonts.HELD_OUT_FONT_FAMILIES.values() for f in names}
    assert not open_fonts & held_out_fonts
    assert not set(fonts.OPEN_FONT_FAMILIES) & set(fonts.HELD_OUT_FONT_FAMILIES)
    train_words, eval_words = set(corpus.words("train")), set(corpus.words("eval"))
    used = set()
    for split in data.SPLITS:
        for index in range(150):
            sample = open_ocr(index, split)
            assert (
                sample.meta["font"] in open_fonts
                and set(sample.text.lower().split()) <= train_words
            )
            used.add(fonts.FONT_FAMILY[sample.meta["font"]])
    assert used == set(fonts.OPEN_FONT_FAMILIES)  # variety: every family within 300 samples
    for index in range(150):
        sample = ood_ocr(index)
        assert (
            sample.meta["font"] in held_out_fonts and set(sample.text.lower().split()) <= eval_words
        )


# --- voices and fonts are real -----------------------------------------------------------------


def test_every_voice_and_variant_sounds_different():
    """espeak-ng ignores unknown variants (and any after ``en-gb``) without a word: each variant
    must change the sound, each base voice must differ, and a variant must work on each base."""
    variants = (*speech_module.UTTERANCE_VARIANTS, *speech_module.HELD_OUT_VARIANTS)
    waves = {v: data.synthesize(PROBE, f"en-us+{v}").tobytes() for v in ("", *variants)}
    assert len(set(waves.values())) == len(waves)
    bases = (*speech_module.UTTERANCE_VOICES, *speech_module.HELD_OUT_VOICES)
    plain = {b: data.synthesize(PROBE, b).tobytes() for b in bases}
    assert len(set(plain.values())) == len(bases)
    for base in bases:
        assert data.synthesize(PROBE, f"{base}+f2").tobytes() != plain[base], base


def test_every_font_file_is_found_and_named_with_its_package():
    for families in (fonts.OPEN_FONT_FAMILIES, fonts.HELD_OUT_FONT_FAMILIES):
        for package, names in families.values():
            for name in names:
                if name != fonts.DEFAULT_FONT:
                    assert fonts.font(name, 20).getlength("abc") > 0
                if package not in ("", "fonts-dejavu-core"):
                    assert fonts.FONT_PACKAGES[name] == package
    assert fonts.FONT_FAMILY["Z003-MediumItalic.otf"] == "Z003"


# --- the OOD retrieval sets --------------------------------------------------------------------


def test_ood_text_sets_have_distinct_texts(silent):
    for kind, generate in (("ood_speech", speech_module.ood_speech), ("ood_ocr", ood_ocr)):
        samples = ood_text_set(kind, 40)
        texts = [s.text.lower() for s in samples]
        assert len(samples) == 40 and len(set(texts)) == 40
        assert samples[0].text == generate(0, "test").text  # the first test samples, in order
        assert all(s.meta["split"] == "test" for s in samples)
    with pytest.raises(ValueError, match="kind must be one of"):
        ood_text_set("scene")
