"""The ``lcoemb`` command line: parse arguments, call the library, print. No logic of its own."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lcoemb.config import add_config_arguments, given_settings
from lcoemb.mini.registry import DEFAULT_MODEL
from lcoemb.serving import ServeConfig
from lcoemb.training.config import TrainConfig


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` via a temporary file, so a failure never leaves half a file.

    The temporary file gets the mode of an ordinary write (0o666 less the umask), not
    ``mkstemp``'s 0o600, which would hide the vectors from the user's group after the rename.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="Hugging Face id, local checkpoint folder, or an embedded default: lco-mini "
        "(LCO-Mini with its text-only LCO adapter; the default) or lco-mini-base",
    )
    p.add_argument("--adapter", help="peft LoRA adapter folder to apply")
    p.add_argument("--device", help="torch device (default: cuda, then mps, then cpu)")
    p.add_argument(
        "--dtype", default="bfloat16", help="model dtype (default: bfloat16, as the reference)"
    )


def cmd_encode(args: argparse.Namespace) -> int:
    from lcoemb import InputError, OmniEncoder
    from lcoemb.inputs import read_items_jsonl

    # An unusable --output must fail now, not after the model has loaded and encoded everything.
    output = Path(args.output)
    if output.is_dir():
        raise IsADirectoryError(f"--output {args.output!r} is a folder; give a .npy file path")
    folder = next(p for p in output.absolute().parents if p.exists())
    if not folder.is_dir():
        raise NotADirectoryError(f"--output {args.output!r}: {os.fspath(folder)!r} is not a folder")
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
            dimensions=args.dimensions,
        )
    except InputError as error:
        if error.index is None:
            raise
        raise InputError(None, f"{args.input}:{lines[error.index]}: {error.reason}") from error
    _save_npy_atomic(output, vectors)
    print(f"wrote {vectors.shape[0]} x {vectors.shape[1]} float32 vectors to {args.output}")
    return 0


def _add_train_args(p: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, help and default from the field; unset flags stay out of
    the namespace so a --config YAML file can supply them."""
    p.add_argument("--config", help="YAML file of settings (flags given here override it)")
    add_config_arguments(p, TrainConfig, from_file=True)


def cmd_train(args: argparse.Namespace) -> int:
    from lcoemb.training.trainer import train

    given = given_settings(TrainConfig, args)
    config = TrainConfig.from_yaml(args.config, **given) if args.config else TrainConfig(**given)
    if not config.output:
        raise ValueError("--output is required (as a flag or in --config)")
    result = train(config)
    print(f"trained {result.steps} steps, final loss {result.final_loss:.4f}")
    print(f"adapter: {result.adapter}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from lcoemb.training.merge import merge_adapter

    out = merge_adapter(args.model, args.adapter, args.output, dtype=args.dtype)
    print(f"merged {args.adapter or 'its adapter'} into {args.model}: {out}")
    return 0


def cmd_soup(args: argparse.Namespace) -> int:
    from lcoemb.training.merge import soup_adapters

    out = soup_adapters(args.adapters, args.output, weights=args.weights)
    print(f"averaged {len(args.adapters)} adapters into {out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from lcoemb import OmniEncoder
    from lcoemb.evaluation import MTEBEncoder, evaluate, format_table, model_name, resolve_tasks

    names = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    tasks = resolve_tasks(args.benchmark, names, offline_size=args.offline_size)
    encoder = OmniEncoder.from_pretrained(
        args.model, adapter=args.adapter, device=args.device, dtype=args.dtype
    )
    name = model_name(args.model)
    model = MTEBEncoder(
        encoder, name, adapter=args.adapter, use_instructions=not args.no_instructions
    )
    summary = evaluate(model, tasks, args.output, batch_size=args.batch_size)
    print(format_table(summary, name=name, compare=args.compare))
    print(f"\nwrote {Path(args.output) / 'summary.json'} and mteb's result files under it")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    import json

    from lcoemb import OmniEncoder
    from lcoemb.analysis.space import analyze, offline_pairs, read_pairs, write_report

    pairs = offline_pairs(args.n) if args.pairs == "offline" else read_pairs(args.pairs)
    alignment = [m.strip() for m in args.alignment.split(",") if m.strip()]

    def run(adapter: str | None, model: str = args.model) -> dict:
        encoder = OmniEncoder.from_pretrained(
            model, adapter=adapter, device=args.device, dtype=args.dtype
        )
        return analyze(
            encoder,
            pairs,
            layers=args.layers,
            k=args.k,
            alignment=alignment,
            batch_size=args.batch_size,
        )

    result = run(args.adapter)
    compare = labels = None
    if args.compare_adapter or args.compare_model:
        compare = run(args.compare_adapter, args.compare_model or args.model)
        labels = (
            Path(args.adapter).name if args.adapter else Path(args.model).name,
            Path(args.compare_adapter).name if args.compare_adapter else args.compare_model,
        )
    plots = write_report(result, args.output, compare, labels or ("before", "after"))
    final = {m: v[-1] for m, v in result["anisotropy"].items()}
    print("final-layer anisotropy:", json.dumps(final))
    if compare is not None:
        print("compared:", json.dumps({m: v[-1] for m, v in compare["anisotropy"].items()}))
    print(f"wrote {Path(args.output) / 'analysis.json'} and {', '.join(map(str, plots))}")
    return 0


def cmd_grsl_fit(args: argparse.Namespace) -> int:
    import json

    from lcoemb.grsl.fit import fit_file

    fit = fit_file(args.scores, args.output)
    keys = ("slope", "intercept", "r2", "pearson", "spearman", "n")
    print(json.dumps({k: fit[k] for k in keys if k in fit}, indent=2))
    print(f"wrote {Path(args.output) / 'grsl.json'} and {Path(args.output) / 'grsl.png'}")
    return 0


def cmd_grsl_measure(args: argparse.Namespace) -> int:
    from lcoemb.recipes.grsl import measure

    report = measure(
        args.models,
        args.output,
        adapters=args.adapters,
        train_steps=args.train_steps,
        n_generation=args.n_generation,
        offline_size=args.offline_size,
    )
    for row in report["models"]:
        print(
            f"{row['model']:<40} generation {row['generation']:.3f}  "
            f"representation {row['representation']:.3f}"
        )
    print(f"wrote {Path(args.output) / 'scores.csv'}")
    return 0


def _task_values(kind: type) -> Callable[[str], dict[str, Any]]:
    """An argparse type for ``TASK=VALUE,...`` lists over stage 1's tasks."""

    def parse(text: str) -> dict[str, Any]:
        from lcoemb.synthetic import TASKS

        out = {}
        for entry in filter(None, text.split(",")):
            task, sep, value = entry.partition("=")
            if not sep or task not in TASKS:
                raise argparse.ArgumentTypeError(
                    f"{entry!r}: expected TASK=VALUE with TASK one of {', '.join(TASKS)}"
                )
            try:
                out[task] = kind(value)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{entry!r}: {value!r} is not a number") from None
        return out

    return parse


def cmd_mini_pretrain(args: argparse.Namespace) -> int:
    import json

    from lcoemb.recipes.pretrain import PretrainConfig, pretrain

    config = PretrainConfig(
        output=args.output,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        eval_size=args.eval_size,
        cache_dir=args.cache_dir,
        save_steps=args.save_steps,
        resume=args.resume,
        keep_checkpoints=args.keep_checkpoints or None,
        reading=not args.no_reading,
    )
    if args.train is not None:
        config.train = args.train
    config.task_weights.update(args.task_weights or {})
    config.train_size.update(args.train_size or {})
    report = pretrain(config, base=args.base)
    scores = {k: v for k, v in report["scores"].items() if not k.endswith("_examples")}
    print(json.dumps({"seconds": report["seconds"], "scores": scores}, indent=2))
    return 0


def cmd_mini_export(args: argparse.Namespace) -> int:
    from lcoemb.recipes.pretrain import export_checkpoint

    out = export_checkpoint(args.checkpoint, args.output)
    print(f"wrote {out} (use it as --model {out})")
    return 0


def cmd_mini_demo_folder(args: argparse.Namespace) -> int:
    from lcoemb.synthetic import write_demo_folder

    files = write_demo_folder(args.output, args.n)
    print(f"wrote {sum(map(len, files.values()))} files to {args.output}; queries that find them:")
    for modality, pairs in files.items():
        for path, query in pairs:
            print(f"  {modality:<6} {Path(path).relative_to(args.output)!s:<22} {query!r}")
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from lcoemb.recipes.quickstart import QuickstartConfig, quickstart

    quickstart(
        QuickstartConfig(
            output=args.output,
            base=args.base,
            steps=args.steps,
            n_eval=args.n_eval,
            seed=args.seed,
        )
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from lcoemb.serving import serve

    settings = given_settings(ServeConfig, args)
    settings["api_key"] = settings.get("api_key") or os.environ.get("LCOEMB_API_KEY") or None
    serve(ServeConfig(**settings))
    return 0


def cmd_index_build(args: argparse.Namespace) -> int:
    from lcoemb.index import Index

    index = Index.build(
        args.input,
        args.output,
        model=args.model,
        adapter=args.adapter,
        index_type=args.index_type,
        instruction=args.instruction,
        passage_chars=args.passage_chars,
        shard_size=args.shard_size,
        batch_size=args.batch_size,
        engine=args.engine,
        ray_address=args.ray_address,
        strict=args.strict,
        show_progress=not args.quiet,
        device=args.device,
        dtype=args.dtype,
    )
    print(index.summary.format())
    print(f"wrote {args.output}")
    return 0


def cmd_index_update(args: argparse.Namespace) -> int:
    from lcoemb.index import Index

    index = Index.load(args.index)
    summary = index.update(
        model=args.model,
        adapter=args.adapter,
        batch_size=args.batch_size,
        strict=args.strict,
        show_progress=not args.quiet,
        device=args.device,
        dtype=args.dtype,
    )
    print(summary.format())
    return 0


def cmd_index_search(args: argparse.Namespace) -> int:
    import json

    from lcoemb import Audio, Video
    from lcoemb.index import Index
    from lcoemb.inputs import ImageRef

    parts: list[Any] = [ImageRef(Path(args.image))] if args.image else []
    parts += [Audio(args.audio)] if args.audio else []
    parts += [Video(args.video)] if args.video else []
    if args.query:
        parts.append(args.query)
    if not parts:
        raise ValueError("give a text QUERY, or --image, --audio or --video (or several)")
    query = parts[0] if len(parts) == 1 else parts
    modalities = (
        [m.strip() for m in args.modality.split(",") if m.strip()] if args.modality else None
    )
    index = Index.load(args.index)
    index.get_encoder(device=args.device, dtype=args.dtype)
    (hits,) = index.search([query], k=args.k, modalities=modalities)
    if args.json:
        print(
            json.dumps(
                [
                    {"rank": r, "id": h.id, "score": h.score, **h.row}
                    for r, h in enumerate(hits, start=1)
                ],
                indent=2,
                default=str,
            )
        )
        return 0
    print(f"{'rank':>4}  {'score':>7}  {'modality':<11} path")
    for rank, hit in enumerate(hits, start=1):
        line = f"{rank:>4}  {hit.score:>7.4f}  {hit.modality:<11} {hit.path}"
        if hit.row.get("passage") is not None:
            line += f" (passage {hit.row['passage']})"
        print(line)
        if hit.row.get("text"):
            text = " ".join(hit.row["text"].split())
            print(f"{'':>26}{text[:200]}{'...' if len(text) > 200 else ''}")
    if not hits:
        print("(no results)")
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
        'input line is one of {"text": ...}, {"image": path}, {"audio": path} (optionally with '
        '"sampling_rate"), {"video": path} (optionally with "fps") or {"parts": [...]} (an '
        "interleaved item of such parts); any other key is an error. Relative paths resolve "
        "against the input file's folder. A bad line stops the run with its line number and "
        "writes nothing; a bad --output stops it before the model loads.",
    )
    _add_model_args(enc)
    enc.add_argument("--input", required=True, help="items file (.jsonl)")
    enc.add_argument("--output", required=True, help="output .npy path")
    enc.add_argument("--batch-size", type=int, default=8)
    enc.add_argument("--instruction", help="task instruction prepended to every item")
    enc.add_argument("--no-normalize", action="store_true", help="skip L2 normalisation")
    enc.add_argument(
        "--dimensions",
        type=int,
        help="keep the first N components of each vector (Matryoshka), re-normalised",
    )
    enc.add_argument("--quiet", action="store_true", help="no progress bar")
    enc.set_defaults(func=cmd_encode)

    tr = sub.add_parser(
        "train",
        help="text-only LoRA contrastive training (the LCO-EMB recipe)",
        description="Train a LoRA adapter on the language model with InfoNCE over triplets "
        "(anchor, positive, optional negative). Defaults are the reference recipe. Run on "
        "several processes with `torchrun --nproc_per_node N -m lcoemb.cli train ...` "
        "(or `accelerate launch`): embeddings are gathered so every process sees the global batch.",
    )
    _add_train_args(tr)
    tr.set_defaults(func=cmd_train)

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
    mg.set_defaults(func=cmd_merge)

    sp = sub.add_parser("soup", help="average LoRA adapters (a model soup)")
    sp.add_argument("--adapters", nargs="+", required=True, help="adapter folders to average")
    sp.add_argument("--weights", nargs="+", type=float, help="one weight per adapter")
    sp.add_argument("--output", required=True, help="folder for the averaged adapter")
    sp.set_defaults(func=cmd_soup)

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
    ev.set_defaults(func=cmd_eval)

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
    an.add_argument("--batch-size", type=int, default=8)
    an.set_defaults(func=cmd_analyze)

    gr = sub.add_parser("grsl", help="the Generation-Representation Scaling Law")
    gr_sub = gr.add_subparsers(dest="grsl_command", required=True)
    gf = gr_sub.add_parser(
        "fit",
        help="fit representation against generation across models",
        description="Fit the linear law (and a log-linear alternative) to a CSV with columns "
        "model,generation,representation[,group]; writes OUTPUT/grsl.json and grsl.png.",
    )
    gf.add_argument("--scores", required=True, help="CSV of model,generation,representation")
    gf.add_argument("--output", required=True)
    gf.set_defaults(func=cmd_grsl_fit)
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
    gm.add_argument("--train-steps", type=int, default=60)
    gm.add_argument("--n-generation", type=int, default=50, help="items per generation task")
    gm.add_argument("--offline-size", type=int, help="shrink the offline sets (quick check)")
    gm.set_defaults(func=cmd_grsl_measure)

    qs = sub.add_parser(
        "quickstart",
        help="train LCO-Mini on text only and show cross-modal retrieval before and after",
        description="Train the LCO adapter on lco-mini-base with text-only triplets (60 steps "
        "of 16, LoRA r=16, lr 1e-3), then evaluate base and trained models on held-out image, "
        "OCR, audio and video retrieval (R@1, nDCG@10) and measure anisotropy and mutual-kNN "
        "alignment per layer. Prints the tables; writes report.json, table.txt, retrieval.png, "
        "anisotropy.png, mutual_knn.png and analysis.json to OUTPUT. About 9 minutes on 2 CPU "
        "cores.",
    )
    qs.add_argument("--output", default="lcoemb-quickstart")
    qs.add_argument("--base", default="lco-mini-base", help="generative-stage backbone")
    qs.add_argument("--steps", type=int, default=60, help="text-only training steps")
    qs.add_argument("--n-eval", type=int, default=50, help="held-out items per retrieval set")
    qs.add_argument("--seed", type=int, default=0)
    qs.set_defaults(func=cmd_quickstart)

    sv = sub.add_parser(
        "serve",
        help="serve an OpenAI-compatible embeddings API (POST /v1/embeddings)",
        description="Serve the model over HTTP: OpenAI's embeddings API with multimodal content "
        "parts, dynamic batching across requests, /health, /ready and /metrics.",
    )
    _add_model_args(sv)
    add_config_arguments(sv, ServeConfig, skip=("model", "adapter", "device", "dtype"))
    sv.set_defaults(func=cmd_serve)

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
        "run again with the same arguments.",
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
    ib.add_argument("--batch-size", type=int, default=8)
    ib.add_argument("--engine", choices=["local", "ray"], default="local")
    ib.add_argument("--ray-address", help="Ray cluster address (default: start a local one)")
    ib.add_argument("--strict", action="store_true", help="stop at the first unreadable file")
    ib.add_argument("--quiet", action="store_true", help="no progress bars")
    ib.set_defaults(func=cmd_index_build)
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
    iu.add_argument("--batch-size", type=int, default=8)
    iu.add_argument("--strict", action="store_true", help="stop at the first unreadable file")
    iu.add_argument("--quiet", action="store_true", help="no progress bars")
    iu.set_defaults(func=cmd_index_update)
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
    isr.set_defaults(func=cmd_index_search)

    mini = sub.add_parser("mini", help="the embedded default backbone LCO-Mini")
    mini_sub = mini.add_subparsers(dest="mini_command", required=True)
    pt = mini_sub.add_parser(
        "pretrain",
        help="stage-1 generative pretraining of the LCO-Mini projectors",
        description="Train LCO-Mini's projectors with next-token loss on generated captioning, "
        "OCR, digit, ASR and clip-description data (towers and LM frozen), then score "
        "generation on held-out data. Writes config.json, projectors.safetensors, "
        "pretrain_log.jsonl and pretrain_report.json to OUTPUT.",
    )
    pt.add_argument("--output", required=True)
    pt.add_argument("--steps", type=int, default=1500)
    pt.add_argument("--batch-size", type=int, default=16)
    pt.add_argument("--lr", type=float, default=1e-3)
    pt.add_argument("--seed", type=int, default=0)
    pt.add_argument("--eval-size", type=int, default=100, help="held-out samples per task")
    pt.add_argument("--base", help="continue from an LCO-Mini folder instead of from scratch")
    pt.add_argument(
        "--cache-dir", help="keep the frozen tower features here, to reuse in later runs"
    )
    pt.add_argument("--save-steps", type=int, default=100, help="checkpoint every N steps")
    pt.add_argument(
        "--train",
        type=lambda v: [x for x in v.split(",") if x],
        help="projectors that learn, comma-separated from image,audio,read (default: all); "
        "e.g. --base OLD --train read adds reading to a model trained without it",
    )
    pt.add_argument(
        "--task-weights",
        type=_task_values(float),
        help="TASK=W,... sampling weights over scene,ocr,digit,speech,clip (others keep their "
        "defaults; 0 leaves a task out)",
    )
    pt.add_argument(
        "--train-size", type=_task_values(int), help="TASK=N,... training examples per task"
    )
    pt.add_argument(
        "--no-reading",
        action="store_true",
        help="images get no reading tokens (the shipped base's first stage-1 run)",
    )
    pt.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest complete checkpoint in OUTPUT/checkpoints",
    )
    pt.add_argument(
        "--keep-checkpoints",
        type=int,
        default=2,
        help="newest checkpoints kept (0 keeps all: each is a smaller-budget variant)",
    )
    pt.set_defaults(func=cmd_mini_pretrain)
    df = mini_sub.add_parser(
        "demo-folder",
        help="write a small generated mixed folder to try `lcoemb index` on",
        description="Write N scene images (PNG), spoken captions (WAV), moving-shape clips "
        "(MP4) and text notes (TXT), all generated, into OUTPUT; print each file with a text "
        "query that should find it.",
    )
    df.add_argument("--output", required=True)
    df.add_argument("--n", type=int, default=4, help="files per kind (default 4)")
    df.set_defaults(func=cmd_mini_demo_folder)
    ex = mini_sub.add_parser(
        "export",
        help="turn a stage-1 checkpoint into a model folder",
        description="Write OUTPUT/config.json and projectors.safetensors from "
        "RUN/checkpoints/step-N, so an intermediate generative budget can be encoded, trained "
        "and evaluated like any model (the GRSL budget axis).",
    )
    ex.add_argument("--checkpoint", required=True, help="RUN/checkpoints/step-N")
    ex.add_argument("--output", required=True)
    ex.set_defaults(func=cmd_mini_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    from lcoemb.inputs import InputError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (InputError, ImportError, OSError, ValueError) as error:
        print(f"lcoemb {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
