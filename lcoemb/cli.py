"""The ``lcoemb`` command line: the parser and :func:`main`. What each subcommand does is in
:mod:`lcoemb.commands`, imported only once the arguments are parsed, so that ``lcoemb --help``
and usage errors start without torch.

Options that are settings of a run come from the settings dataclasses of :mod:`lcoemb.config`
(help and default from each field's metadata, :func:`~lcoemb.config.add_config_arguments`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from lcoemb.config import (
    AblationConfig,
    PretrainConfig,
    QuickstartConfig,
    ServeConfig,
    TrainConfig,
    add_config_arguments,
    comma_list,
)
from lcoemb.mini.registry import DEFAULT_MODEL

#: ``--dtype`` of the commands that load a model: left out, the device's own (devices.default_dtype)
DTYPE_HELP = (
    "model dtype (default: bfloat16, as the reference, where the device computes it fast: CUDA "
    "with bf16, MPS, a CPU with AMX or AVX-512 bf16; float32 elsewhere)"
)

#: ``--batch-size`` of the commands that encode: left out, the model's own default
BATCH_HELP = "items per model batch (default: the model's own, 32 for lco-mini and 8 otherwise)"


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="Hugging Face id, local checkpoint folder, or an embedded default: lco-mini "
        "(LCO-Mini with its text-only LCO adapter; the default) or lco-mini-base",
    )
    p.add_argument("--adapter", help="peft LoRA adapter folder to apply")
    p.add_argument("--device", help="torch device (default: cuda, then mps, then cpu)")
    p.add_argument("--dtype", help=DTYPE_HELP)


def _add_train_args(p: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, help and default from the field; unset flags stay out of
    the namespace so a --config YAML file can supply them."""
    p.add_argument("--config", help="YAML file of settings (flags given here override it)")
    add_config_arguments(p, TrainConfig, from_file=True)


def _add_encode_command(sub: Any) -> None:
    """Add ``lcoemb encode`` and its flags to ``sub``."""
    enc = sub.add_parser(
        "encode",
        help="embed the items of a JSONL file into a .npy matrix",
        description="Embed items into an (n, d) float32 .npy file, rows in input order. Each "
        'input line is one of {"text": ...}, {"image": path}, {"audio": path} (optionally with '
        '"sampling_rate"), {"video": path} (optionally with "fps") or {"parts": [...]} (an '
        "interleaved item of such parts); any other key is an error. Relative paths resolve "
        "against the input file's folder. A bad line stops the run with its line number and "
        "writes nothing; a bad --output stops it before the model loads.",
    )
    _add_model_args(enc)
    enc.add_argument("--input", required=True, help="items file (.jsonl)")
    enc.add_argument("--output", required=True, help="output .npy path")
    enc.add_argument("--batch-size", type=int, help=BATCH_HELP)
    enc.add_argument("--instruction", help="task instruction prepended to every item")
    enc.add_argument("--no-normalize", action="store_true", help="skip L2 normalisation")
    enc.add_argument(
        "--dimensions",
        type=int,
        help="keep the first N components of each vector (Matryoshka), re-normalised",
    )
    enc.add_argument("--quiet", action="store_true", help="no progress bar")
    enc.set_defaults(run="encode")


def _add_train_command(sub: Any) -> None:
    """Add ``lcoemb train`` and its flags to ``sub``."""
    tr = sub.add_parser(
        "train",
        help="text-only LoRA contrastive training (the LCO-EMB recipe)",
        description="Train a LoRA adapter on the language model with InfoNCE over triplets "
        "(anchor, positive, optional negative). Defaults are the reference recipe. Run on "
        "several processes with `torchrun --nproc_per_node N -m lcoemb.cli train ...` "
        "(or `accelerate launch`): embeddings are gathered so every process sees the global batch.",
    )
    _add_train_args(tr)
    tr.set_defaults(run="train")


def _add_merge_command(sub: Any) -> None:
    """Add ``lcoemb merge`` and its flags to ``sub``."""
    mg = sub.add_parser("merge", help="merge a LoRA adapter into its backbone (merge_and_unload)")
    mg.add_argument(
        "--model",
        required=True,
        help="base the adapter was trained on (Hugging Face id, local folder, lco-mini-base), "
        "or a model that carries its adapter (lco-mini)",
    )
    mg.add_argument(
        "--adapter",
        help="peft adapter folder; leave it out for a model that carries its adapter (lco-mini, "
        "or a folder saved with merge=False), which then gets that one merged",
    )
    mg.add_argument("--output", required=True, help="folder for the merged checkpoint")
    mg.add_argument("--dtype", default=None, help="weights dtype (default: the checkpoint's)")
    mg.set_defaults(run="merge")


def _add_soup_command(sub: Any) -> None:
    """Add ``lcoemb soup`` and its flags to ``sub``."""
    sp = sub.add_parser("soup", help="average LoRA adapters (a model soup)")
    sp.add_argument("--adapters", nargs="+", required=True, help="adapter folders to average")
    sp.add_argument("--weights", nargs="+", type=float, help="one weight per adapter")
    sp.add_argument("--output", required=True, help="folder for the averaged adapter")
    sp.set_defaults(run="soup")


def _add_export_command(sub: Any) -> None:
    """Add ``lcoemb export`` and its flags to ``sub``."""
    ex = sub.add_parser(
        "export",
        help="write a model as a folder another library loads (sentence-transformers)",
        description="Write the model, with its adapter merged, as a folder that "
        "sentence_transformers.SentenceTransformer(OUTPUT) loads and whose encode() gives this "
        "model's lcoemb vectors: the checkpoint and processor, a chat template that adds the "
        "LCO one-word-summary prompt, and modules.json (last-token pooling, normalisation). The "
        "folder is loaded back with sentence-transformers and checked against lcoemb on a "
        "generated text, image and audio clip (those the model has) before it is kept. "
        "Families it cannot reproduce are refused with the reason: LCO-Mini (not a "
        "transformers checkpoint) and LLaVA-NeXT (its prompt is built outside the template).",
    )
    ex.add_argument(
        "--model", required=True, help="Hugging Face id, local checkpoint folder or saved model"
    )
    ex.add_argument("--adapter", help="peft LoRA adapter folder to merge in")
    ex.add_argument(
        "--format", required=True, choices=["sentence-transformers"], help="what to write"
    )
    ex.add_argument("--output", required=True, help="a new (or empty) folder")
    ex.add_argument("--dtype", help="weights dtype (default: the checkpoint's own)")
    ex.add_argument("--device", default="cpu", help="torch device for merging and the check")
    ex.add_argument(
        "--no-verify", action="store_true", help="skip loading the folder back to compare"
    )
    ex.set_defaults(run="export")


def _add_eval_command(sub: Any) -> None:
    """Add ``lcoemb eval`` and its flags to ``sub``."""
    ev = sub.add_parser(
        "eval",
        help="evaluate with mteb: MIEB(lite), MAEB, MVEB, any mteb task, or the offline benchmark",
        description="Run mteb benchmarks or tasks on a model and summarise them per task type "
        "(the MIEB leaderboard's categories). Keeps mteb's result files under OUTPUT and writes "
        "OUTPUT/summary.json; tasks needing a modality the model lacks are skipped and listed. "
        "'offline' is the project's generated four-modality benchmark (no dataset hub needed); "
        "the others download their data from the Hugging Face hub.",
    )
    _add_model_args(ev)
    which = ev.add_mutually_exclusive_group(required=True)
    which.add_argument("--benchmark", help="MIEB(lite), MAEB, MVEB, any mteb benchmark, offline")
    which.add_argument("--tasks", help="comma-separated mteb or offline task names")
    ev.add_argument("--output", required=True, help="results folder")
    ev.add_argument("--batch-size", type=int, default=16)
    ev.add_argument(
        "--compare", action="store_true", help="add the published MIEB-Lite reference rows"
    )
    ev.add_argument(
        "--no-instructions",
        action="store_true",
        help="ignore task instructions (exactly the reference wrapper's behaviour)",
    )
    ev.add_argument(
        "--offline-size",
        type=int,
        help="shrink each offline set to at most N items, for a quick check",
    )
    ev.set_defaults(run="eval")


def _add_analyze_command(sub: Any) -> None:
    """Add ``lcoemb analyze`` and its flags to ``sub``."""
    an = sub.add_parser(
        "analyze",
        help="anisotropy and cross-modal kernel alignment per layer and modality",
        description="Per layer: anisotropy (mean pairwise cosine of last-token states) of each "
        "modality, and mutual-kNN alignment (optionally CKA, CKNNA) between paired media and "
        "texts. Writes OUTPUT/analysis.json and one PNG per measure; with --compare-adapter or "
        "--compare-model the second model's curves are overlaid dashed.",
    )
    _add_model_args(an)
    an.add_argument(
        "--pairs",
        required=True,
        help='JSONL of {"text": ..., "image"|"audio"|"video": path} lines, or "offline" '
        "for the project's generated scene, speech and clip pairs",
    )
    an.add_argument("--output", required=True)
    an.add_argument("--compare-adapter", help="a second adapter on the same model")
    an.add_argument("--compare-model", help="a second model (e.g. lco-mini against lco-mini-base)")
    an.add_argument("--layers", default="all", help="all, last, or indices like 0,12,-1")
    an.add_argument("--k", type=int, default=10, help="neighbours for mutual kNN and CKNNA")
    an.add_argument(
        "--alignment", default="mutual_knn", help="comma-separated: mutual_knn, cka, cknna"
    )
    an.add_argument("--n", type=int, default=200, help="pairs per modality with --pairs offline")
    an.add_argument("--batch-size", type=int, help=BATCH_HELP)
    an.set_defaults(run="analyze")


def _add_grsl_command(sub: Any) -> None:
    """Add ``lcoemb grsl`` and its flags to ``sub``."""
    gr = sub.add_parser("grsl", help="the Generation-Representation Scaling Law")
    gr_sub = gr.add_subparsers(dest="grsl_command", required=True)
    gf = gr_sub.add_parser(
        "fit",
        help="fit representation against generation across models",
        description="Fit the linear law (and a log-linear alternative) to a CSV with columns "
        "model,generation,representation[,group][,budget] (rows sharing a budget are seeds of "
        "one configuration); Spearman, Pearson and the slope get 95 %% bootstrap intervals "
        "(seeds resampled within budgets). Writes OUTPUT/grsl.json and grsl.png.",
    )
    gf.add_argument("--scores", required=True, help="CSV of model,generation,representation")
    gf.add_argument("--output", required=True)
    gf.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    gf.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    gf.set_defaults(run="grsl fit")
    gm = gr_sub.add_parser(
        "measure",
        help="measure generation and representation scores of models",
        description="For each model: generation scores by its own generate (caption accuracy, "
        "OCR character accuracy, ASR WER where it has audio) and the offline benchmark's mean "
        "after the same short text-only LCO training (or with --adapters). Writes "
        "OUTPUT/scores.csv for `grsl fit`, measure.json, and the fit for 3 or more models.",
    )
    gm.add_argument("--models", nargs="+", required=True)
    gm.add_argument("--output", required=True)
    gm.add_argument("--adapters", nargs="+", help="one trained adapter per model (skip training)")
    gm.add_argument(
        "--budgets",
        nargs="+",
        help="one budget per model (e.g. its stage-1 steps): models sharing a budget are seeds "
        "of one configuration, which the fit bootstraps within",
    )
    gm.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        help="train each model's text-only adapter once per seed (data order, LoRA init, "
        "dropout), one row each; a model's seeds share its budget (default: one run, seed 0)",
    )
    gm.add_argument("--train-steps", type=int, default=60)
    gm.add_argument(
        "--lora-targets",
        nargs="+",
        help="the text-only training's LoRA targets, Linear names such as q_proj v_proj "
        "(default: the quickstart's, q_proj k_proj v_proj o_proj)",
    )
    gm.add_argument("--n-generation", type=int, default=50, help="items per generation task")
    gm.add_argument("--offline-size", type=int, help="shrink the offline sets (quick check)")
    gm.set_defaults(run="grsl measure")
    gg = gr_sub.add_parser(
        "generation",
        help="how much generation a model keeps with its adapter",
        description="Score each generation task of the generated data (scene captions, OCR, "
        "digits, ASR, clips, and open words, sentences, wide scenes and two-object clips) with the "
        "adapter disabled and active, and print the ratio "
        "(quality = the score, or 1 - WER): the paper's claim is that text-only LoRA training "
        "preserves generation. Writes OUTPUT/generation.json when --output is given.",
    )
    _add_model_args(gg)
    gg.add_argument("--n", type=int, default=100, help="test samples per task")
    gg.add_argument("--tasks", type=comma_list, help="comma-separated tasks (default: all)")
    gg.add_argument("--output", help="folder for generation.json")
    gg.set_defaults(run="grsl generation")


def _add_quickstart_command(sub: Any) -> None:
    """Add ``lcoemb quickstart`` and its flags to ``sub``."""
    qs = sub.add_parser(
        "quickstart",
        help="train LCO-Mini on text only and show cross-modal retrieval before and after",
        description="Train the LCO adapter on lco-mini-base with text-only triplets (60 steps "
        "of 16, LoRA r=16 on the attention projections, lr 1e-4), then evaluate base and "
        "trained models on held-out image, OCR, audio and video retrieval (R@1, nDCG@10) and "
        "measure anisotropy and mutual-kNN alignment per layer. Prints the tables; writes "
        "report.json, table.txt, retrieval.png, anisotropy.png, mutual_knn.png and "
        "analysis.json to OUTPUT. About 8 minutes on 2 CPU cores with AMX bf16; about 33 "
        "on 2 cores without fast bf16 (AVX2 only), which run it in float32.",
    )
    add_config_arguments(
        qs,
        QuickstartConfig,
        only=(
            "model",
            "output",
            "corpus",
            "max_steps",
            "lr",
            "lora_r",
            "lora_targets",
            "n_eval",
            "seed",
        ),
    )
    qs.set_defaults(run="quickstart")


def _add_serve_command(sub: Any) -> None:
    """Add ``lcoemb serve`` and its flags to ``sub``."""
    sv = sub.add_parser(
        "serve",
        help="serve an OpenAI-compatible embeddings API (POST /v1/embeddings)",
        description="Serve the model over HTTP: OpenAI's embeddings API with multimodal content "
        "parts, dynamic batching across requests, /health, /ready and /metrics.",
    )
    _add_model_args(sv)
    add_config_arguments(sv, ServeConfig, skip=("model", "adapter", "device", "dtype"))
    sv.set_defaults(run="serve")


def _add_index_command(sub: Any) -> None:
    """Add ``lcoemb index`` and its flags to ``sub``."""
    ix = sub.add_parser(
        "index",
        help="index a folder of files (or an items JSONL) and search it",
        description="Walk a collection, embed it, and keep the vectors in a plain index "
        "folder: manifest.json, Parquet shards (one row per item with its vector), a FAISS "
        "index and errors.jsonl.",
    )
    ix_sub = ix.add_subparsers(dest="index_command", required=True)
    ib = ix_sub.add_parser(
        "build",
        help="embed a folder or an items JSONL into an index folder",
        description="Images (jpg, png, webp, gif, bmp, tiff), audio (wav, flac, mp3, ogg, m4a), "
        "video (mp4, mkv, webm, mov) and text (txt, md; split into passages) are embedded; other "
        "files are skipped and counted; unreadable ones go to OUTPUT/errors.jsonl (or stop the "
        "build with --strict). An interrupted build continues from its last written shard when "
        "run again with the same arguments, in the dtype of the shards already written.",
    )
    _add_model_args(ib)
    ib.add_argument("--input", required=True, help="a folder (walked recursively) or items .jsonl")
    ib.add_argument("--output", required=True, help="the index folder")
    ib.add_argument(
        "--index-type",
        default="Flat",
        help="FAISS factory string, e.g. HNSW32 or IVF1024,PQ64 (default Flat: exact inner "
        "product)",
    )
    ib.add_argument("--instruction", help="task instruction for queries (documents get none)")
    ib.add_argument("--passage-chars", type=int, default=1000, help="text passage size (chars)")
    ib.add_argument("--shard-size", type=int, default=256, help="items per Parquet shard")
    ib.add_argument("--batch-size", type=int, help=BATCH_HELP)
    ib.add_argument("--engine", choices=["local", "ray"], default="local")
    ib.add_argument("--ray-address", help="Ray cluster address (default: start a local one)")
    ib.add_argument("--strict", action="store_true", help="stop at the first unreadable file")
    ib.add_argument("--quiet", action="store_true", help="no progress bars")
    ib.set_defaults(run="index build")
    iu = ix_sub.add_parser(
        "update",
        help="embed new and changed files, drop deleted ones",
        description="Re-walk the index's source: embed only new or changed items (by content "
        "hash), remove deleted ones, rebuild the FAISS index. --model/--adapter, when given, "
        "must be the index's own.",
    )
    iu.add_argument("index", help="the index folder")
    iu.add_argument("--model", help="refuse unless this is the index's model")
    iu.add_argument("--adapter", help="refuse unless this is the index's adapter")
    iu.add_argument("--device", help="torch device (default: cuda, then mps, then cpu)")
    iu.add_argument("--dtype", help="model dtype (default: the one the index was built in)")
    iu.add_argument("--batch-size", type=int, help=BATCH_HELP)
    iu.add_argument("--strict", action="store_true", help="stop at the first unreadable file")
    iu.add_argument("--quiet", action="store_true", help="no progress bars")
    iu.set_defaults(run="index update")
    isr = ix_sub.add_parser(
        "search",
        help="search an index by text, by a media file, or both",
        description="Embed the query with the index's model (text, a media file, or both as one "
        "interleaved query) and print the best items: rank, score, modality, path, and the "
        "passage for text.",
    )
    isr.add_argument("index", help="the index folder")
    isr.add_argument("query", nargs="?", help="query text")
    isr.add_argument("--image", help="query image file")
    isr.add_argument("--audio", help="query audio file")
    isr.add_argument("--video", help="query video file")
    isr.add_argument("-k", type=int, default=10, help="results (default 10)")
    isr.add_argument("--modality", help="only these modalities, e.g. image,audio")
    isr.add_argument("--json", action="store_true", help="machine-readable results")
    isr.add_argument("--device", help="torch device")
    isr.add_argument("--dtype", help="model dtype (default: the one the index was built in)")
    isr.set_defaults(run="index search")


def _add_mini_command(sub: Any) -> None:
    """Add ``lcoemb mini`` and its flags to ``sub``."""
    mini = sub.add_parser("mini", help="the embedded default backbone LCO-Mini")
    mini_sub = mini.add_subparsers(dest="mini_command", required=True)
    pt = mini_sub.add_parser(
        "pretrain",
        help="stage-1 generative pretraining of the LCO-Mini projectors",
        description="Train LCO-Mini's projectors with next-token loss on generated captioning, "
        "OCR, digit, ASR and clip-description data, closed-grammar and open-vocabulary "
        "(towers frozen; the LM frozen too unless --lm-lora-r puts a LoRA on it), then score "
        "generation on held-out data. Writes config.json, projectors.safetensors (and "
        "language_model_lora.safetensors), checkpoints/, pretrain_log.jsonl and "
        "pretrain_report.json to OUTPUT.",
    )
    # warm-up, weight decay, logging and bf16 keep their defaults on the command line
    add_config_arguments(
        pt, PretrainConfig, skip=("warmup_steps", "weight_decay", "log_steps", "bf16")
    )
    pt.add_argument("--base", help="continue from an LCO-Mini folder instead of from scratch")
    pt.set_defaults(run="mini pretrain")
    df = mini_sub.add_parser(
        "demo-folder",
        help="write a small generated mixed folder to try `lcoemb index` on",
        description="Write N scene images (PNG), spoken captions (WAV), moving-shape clips "
        "(MP4) and text notes (TXT), all generated, into OUTPUT; print each file with a text "
        "query that should find it.",
    )
    df.add_argument("--output", required=True)
    df.add_argument("--n", type=int, default=4, help="files per kind (default 4)")
    df.set_defaults(run="mini demo-folder")
    ex = mini_sub.add_parser(
        "export",
        help="turn a stage-1 checkpoint into a model folder",
        description="Write OUTPUT/config.json and projectors.safetensors from "
        "RUN/checkpoints/step-N, so an intermediate generative budget can be encoded, trained "
        "and evaluated like any model (the GRSL budget axis).",
    )
    ex.add_argument("--checkpoint", required=True, help="RUN/checkpoints/step-N")
    ex.add_argument("--output", required=True)
    ex.set_defaults(run="mini export")
    ab = mini_sub.add_parser(
        "ablation",
        help="text-only vs mixed vs multimodal-only LCO training vs none, on the same budget",
        description="The paper's calibration ablation on LCO-Mini: train the LCO adapter on "
        "text-only triplets, on text mixed with multimodal calibration pairs (caption → image, "
        "speech or clip from stage 1's train split), and on the calibration pairs alone, each "
        "with the quickstart's budget; evaluate them and the untrained base on in-distribution "
        "and out-of-distribution retrieval and on the generation each adapter keeps. Prints the "
        "table; writes ablation.json and ablation.md to OUTPUT.",
    )
    add_config_arguments(
        ab,
        AblationConfig,
        only=(
            "model",
            "output",
            "max_steps",
            "lr",
            "lora_r",
            "lora_targets",
            "variants",
            "n_multimodal",
            "calibration_tasks",
            "multimodal_weight",
            "n_eval",
            "n_ood",
            "n_generation",
            "seed",
        ),
    )
    ab.set_defaults(run="mini ablation")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lcoemb",
        description="Language-centric omnimodal embeddings: one embedding model for text, "
        "images, audio and video from a multimodal LLM.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        _add_encode_command,
        _add_train_command,
        _add_merge_command,
        _add_soup_command,
        _add_export_command,
        _add_eval_command,
        _add_analyze_command,
        _add_grsl_command,
        _add_quickstart_command,
        _add_serve_command,
        _add_index_command,
        _add_mini_command,
    ):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The one lazy import: the commands need torch and most of the library, which `--help` and
    # usage errors must not pay for.
    from lcoemb import commands

    try:
        return commands.COMMANDS[args.run](args)
    except (commands.InputError, ImportError, OSError, ValueError) as error:
        print(f"lcoemb {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
