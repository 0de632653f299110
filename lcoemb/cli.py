"""The ``lcoemb`` command line: parse arguments, call the library, print. No logic of its own."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` via a temporary file, so a failure never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="Hugging Face id or local checkpoint folder")
    p.add_argument("--adapter", help="peft LoRA adapter folder to apply")
    p.add_argument("--device", help="torch device (default: cuda, then mps, then cpu)")
    p.add_argument(
        "--dtype", default="bfloat16", help="model dtype (default: bfloat16, as the reference)"
    )


def cmd_encode(args: argparse.Namespace) -> int:
    from lcoemb import InputError, OmniEncoder
    from lcoemb.inputs import read_items_jsonl

    items, lines = read_items_jsonl(args.input)
    encoder = OmniEncoder.from_pretrained(
        args.model, adapter=args.adapter, device=args.device, dtype=args.dtype
    )
    try:
        vectors = encoder.encode(
            items,
            batch_size=args.batch_size,
            show_progress=not args.quiet,
            normalize=not args.no_normalize,
            instruction=args.instruction,
        )
    except InputError as error:
        if error.index is None:
            raise
        raise InputError(None, f"{args.input}:{lines[error.index]}: {error.reason}") from error
    _save_npy_atomic(Path(args.output), vectors)
    print(f"wrote {vectors.shape[0]} x {vectors.shape[1]} float32 vectors to {args.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lcoemb",
        description="Language-centric omnimodal embeddings: one embedding model for text, "
        "images, audio and video from a multimodal LLM.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    enc = sub.add_parser(
        "encode",
        help="embed the items of a JSONL file into a .npy matrix",
        description="Embed items into an (n, d) float32 .npy file, rows in input order. Each "
        'input line is one of {"text": ...}, {"image": path}, {"audio": path}, {"video": path} '
        'or {"parts": [...]} (an interleaved item); relative paths resolve against the input '
        "file's folder. A bad line stops the run with its line number and writes nothing.",
    )
    _add_model_args(enc)
    enc.add_argument("--input", required=True, help="items file (.jsonl)")
    enc.add_argument("--output", required=True, help="output .npy path")
    enc.add_argument("--batch-size", type=int, default=8)
    enc.add_argument("--instruction", help="task instruction prepended to every item")
    enc.add_argument("--no-normalize", action="store_true", help="skip L2 normalisation")
    enc.add_argument("--quiet", action="store_true", help="no progress bar")
    enc.set_defaults(func=cmd_encode)
    return parser


def main(argv: list[str] | None = None) -> int:
    from lcoemb.inputs import InputError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (InputError, OSError, ValueError) as error:
        print(f"lcoemb {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
