"""What each ``lcoemb`` subcommand does once its arguments are parsed: call the library, print.

:mod:`lcoemb.cli` builds the parser and imports this module only after parsing, so that
``lcoemb --help`` and usage errors do not import torch and the rest of the library that these
commands need. :data:`COMMANDS` maps each subcommand (``"encode"``, ``"mini pretrain"``...) to
its function; each function takes the parsed arguments and returns the exit status.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lcoemb import evaluation
from lcoemb.analysis.space import analyze, offline_pairs, read_pairs, write_report
from lcoemb.config import (
    AblationConfig,
    PretrainConfig,
    QuickstartConfig,
    ServeConfig,
    TrainConfig,
    given_settings,
)
from lcoemb.encoder import OmniEncoder
from lcoemb.evaluation.generation import format_retained, generation_retained
from lcoemb.export import FORMATS as EXPORT_FORMATS
from lcoemb.grsl.fit import fit_file
from lcoemb.index import Index
from lcoemb.inputs import Audio, ImageRef, InputError, Video, read_items_jsonl
from lcoemb.recipes.ablation import ablation
from lcoemb.recipes.grsl import measure
from lcoemb.recipes.pretrain import export_checkpoint, pretrain
from lcoemb.recipes.quickstart import quickstart
from lcoemb.serving import serve
from lcoemb.synthetic import write_demo_folder
from lcoemb.training.merge import merge_adapter, soup_adapters
from lcoemb.training.trainer import train

__all__ = ["COMMANDS", "InputError", "save_npy_atomic"]


def save_npy_atomic(path: Path, array: np.ndarray) -> None:
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


def cmd_encode(args: argparse.Namespace) -> int:
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
    save_npy_atomic(output, vectors)
    print(f"wrote {vectors.shape[0]} x {vectors.shape[1]} float32 vectors to {args.output}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    given = given_settings(TrainConfig, args)
    config = TrainConfig.from_yaml(args.config, **given) if args.config else TrainConfig(**given)
    if not config.output:
        raise ValueError("--output is required (as a flag or in --config)")
    result = train(config)
    print(f"trained {result.steps} steps, final loss {result.final_loss:.4f}")
    print(f"adapter: {result.adapter}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    out = merge_adapter(args.model, args.adapter, args.output, dtype=args.dtype)
    print(f"merged {args.adapter or 'its adapter'} into {args.model}: {out}")
    return 0


def cmd_soup(args: argparse.Namespace) -> int:
    out = soup_adapters(args.adapters, args.output, weights=args.weights)
    print(f"averaged {len(args.adapters)} adapters into {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    out = EXPORT_FORMATS[args.format](
        args.model,
        args.output,
        adapter=args.adapter,
        dtype=args.dtype or "auto",
        device=args.device,
        verify=not args.no_verify,
    )
    checked = "" if args.no_verify else " (checked against lcoemb's vectors)"
    print(f"wrote {args.format} folder {out}{checked}")
    print(f"load it with sentence_transformers.SentenceTransformer({os.fspath(out)!r})")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    names = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    tasks = evaluation.resolve_tasks(args.benchmark, names, offline_size=args.offline_size)
    encoder = OmniEncoder.from_pretrained(
        args.model, adapter=args.adapter, device=args.device, dtype=args.dtype
    )
    name = evaluation.model_name(args.model)
    model = evaluation.MTEBEncoder(
        encoder, name, adapter=args.adapter, use_instructions=not args.no_instructions
    )
    summary = evaluation.evaluate(model, tasks, args.output, batch_size=args.batch_size)
    print(evaluation.format_table(summary, name=name, compare=args.compare))
    print(f"\nwrote {Path(args.output) / 'summary.json'} and mteb's result files under it")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
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
    fit = fit_file(args.scores, args.output, resamples=args.resamples, seed=args.seed)

    def interval(name: str) -> str:
        value, ci = fit[name], fit[f"{name}_ci"]
        if value is None:
            return "n/a"
        return f"{value:.3f}" + ("" if ci is None else f" [{ci[0]:.3f}, {ci[1]:.3f}]")

    boot, r2 = fit["bootstrap"], fit["r2"]
    budgets = f" in {len(fit['groups'])} budgets" if fit["groups"] else ""
    print(f"n = {fit['n']} points{budgets}")
    print(f"Spearman rho {interval('spearman')}")
    print(f"Pearson r    {interval('pearson')}")
    print(f"slope        {interval('slope')}")
    print(f"intercept    {fit['intercept']:.3f}, r² {'n/a' if r2 is None else f'{r2:.3f}'}")
    if "ci_skipped" in fit:
        print(f"no intervals: {fit['ci_skipped']}")
    else:
        print(
            f"[lo, hi]: {boot['confidence']:.0%} percentile bootstrap, "
            f"{boot['used']}/{boot['resamples']} resamples of {boot['scheme']}, seed {boot['seed']}"
        )
    for g in fit["groups"]:
        sds = [g["generation_sd"], g["representation_sd"]]
        gen_sd, rep_sd = ("-" if sd is None else f"{sd:.3f}" for sd in sds)
        print(
            f"  budget {g['budget']:<10} n={g['n']:<3} generation {g['generation_mean']:.3f} "
            f"± {gen_sd}  representation {g['representation_mean']:.3f} ± {rep_sd}"
        )
    print(f"wrote {Path(args.output) / 'grsl.json'} and {Path(args.output) / 'grsl.png'}")
    return 0


def cmd_grsl_measure(args: argparse.Namespace) -> int:
    report = measure(
        args.models,
        args.output,
        adapters=args.adapters,
        budgets=args.budgets,
        seeds=args.seeds,
        train_steps=args.train_steps,
        lora_targets=args.lora_targets,
        n_generation=args.n_generation,
        offline_size=args.offline_size,
    )
    for row in report["models"]:
        seed = "" if row.get("seed") is None else f" seed {row['seed']}"
        print(
            f"{row['model'] + seed:<40} generation {row['generation']:.3f}  "
            f"representation {row['representation']:.3f}"
        )
    print(f"wrote {Path(args.output) / 'scores.csv'}")
    return 0


def cmd_grsl_generation(args: argparse.Namespace) -> int:
    encoder = OmniEncoder.from_pretrained(
        args.model, adapter=args.adapter, device=args.device, dtype=args.dtype
    )
    result = generation_retained(encoder, args.n, args.tasks)
    print(format_retained(result))
    if args.output:
        Path(args.output).mkdir(parents=True, exist_ok=True)
        (Path(args.output) / "generation.json").write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {Path(args.output) / 'generation.json'}")
    return 0


def cmd_mini_pretrain(args: argparse.Namespace) -> int:
    settings = given_settings(PretrainConfig, args)
    defaults = PretrainConfig()
    # a TASK=VALUE list changes the tasks it names; the others keep their defaults
    for name in ("task_weights", "train_size"):
        settings[name] = {**getattr(defaults, name), **settings.get(name, {})}
    if settings.get("keep_checkpoints") == 0:
        settings["keep_checkpoints"] = None
    report = pretrain(PretrainConfig(**settings), base=args.base)
    scores = {k: v for k, v in report["scores"].items() if not k.endswith("_examples")}
    print(json.dumps({"seconds": report["seconds"], "scores": scores}, indent=2))
    return 0


def cmd_mini_export(args: argparse.Namespace) -> int:
    out = export_checkpoint(args.checkpoint, args.output)
    print(f"wrote {out} (use it as --model {out})")
    return 0


def cmd_mini_demo_folder(args: argparse.Namespace) -> int:
    files = write_demo_folder(args.output, args.n)
    print(f"wrote {sum(map(len, files.values()))} files to {args.output}; a query for each:")
    for modality, pairs in files.items():
        for path, query in pairs:
            print(f"  {modality:<6} {Path(path).relative_to(args.output)!s:<22} {query!r}")
    return 0


def cmd_mini_ablation(args: argparse.Namespace) -> int:
    ablation(AblationConfig(**given_settings(AblationConfig, args)))
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    quickstart(QuickstartConfig(**given_settings(QuickstartConfig, args)))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    settings = given_settings(ServeConfig, args)
    settings["api_key"] = settings.get("api_key") or os.environ.get("LCOEMB_API_KEY") or None
    serve(ServeConfig(**settings))
    return 0


def cmd_index_build(args: argparse.Namespace) -> int:
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


#: Each subcommand, as typed after ``lcoemb``, and the function that runs it.
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "encode": cmd_encode,
    "train": cmd_train,
    "merge": cmd_merge,
    "soup": cmd_soup,
    "export": cmd_export,
    "eval": cmd_eval,
    "analyze": cmd_analyze,
    "grsl fit": cmd_grsl_fit,
    "grsl measure": cmd_grsl_measure,
    "grsl generation": cmd_grsl_generation,
    "quickstart": cmd_quickstart,
    "serve": cmd_serve,
    "index build": cmd_index_build,
    "index update": cmd_index_update,
    "index search": cmd_index_search,
    "mini pretrain": cmd_mini_pretrain,
    "mini demo-folder": cmd_mini_demo_folder,
    "mini export": cmd_mini_export,
    "mini ablation": cmd_mini_ablation,
}
