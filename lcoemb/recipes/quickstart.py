"""``lcoemb quickstart``: the paper's mechanism end to end on a laptop.

1. Train the LCO adapter on LCO-Mini's generative stage, on **text-only** triplets: general
   sentences by default (:func:`lcoemb.synthetic.general_triplets`, the paper's setting), or
   descriptions in the evaluation's own grammar (``corpus="in-domain"``,
   :func:`lcoemb.synthetic.triplets`).
2. Evaluate the base and the trained model on held-out generated data: image↔text, OCR
   text→image, audio↔text and video↔text retrieval on the training generators' test split
   (:func:`lcoemb.evaluation.retrieval.evaluate_retrieval`, over the retrieval rows of
   :data:`lcoemb.synthetic.TASKS`) and on the out-of-distribution sets, whose words, voices,
   fonts, wordings and styles no training data has (:func:`~lcoemb.evaluation.retrieval.
   evaluate_ood`); R@1 and nDCG@10; and the anisotropy and mutual-kNN alignment per layer
   (:mod:`lcoemb.analysis.space`).
3. Print the tables and write ``report.json`` and plots.

No image, audio or video is seen in training: any cross-modal gain comes from the alignment the
generative stage created, which the text-only contrastive stage unlocks.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from lcoemb.analysis.plots import retrieval_bars
from lcoemb.analysis.space import analyze, offline_pairs, write_report
from lcoemb.config import QuickstartConfig
from lcoemb.encoder import OmniEncoder
from lcoemb.evaluation.retrieval import evaluate_ood, evaluate_retrieval
from lcoemb.mini.reader import reading_cache
from lcoemb.mini.registry import backbone_path
from lcoemb.synthetic import general_triplets, triplets, wordnet_triplets
from lcoemb.training.trainer import train

#: the text-only corpora, by :attr:`QuickstartConfig.corpus`
CORPORA = {"general": general_triplets, "wordnet": wordnet_triplets, "in-domain": triplets}


def write_text_triplets(path: Path, n: int, corpus: str = "general") -> Path:
    """``n`` text-only triplets of ``corpus`` (``train`` split) as JSONL: ``general``
    (:func:`lcoemb.synthetic.general_triplets`: open sentences, a light-edit positive, a
    lexically close negative), ``wordnet`` (:func:`lcoemb.synthetic.wordnet_triplets`: the same
    with WordNet's synonyms, sibling concepts and dictionary entries) or ``in-domain``
    (:func:`lcoemb.synthetic.triplets`: descriptions in the evaluation's grammar, a paraphrase,
    a one-attribute-off negative)."""
    with path.open("w") as f:
        for t in CORPORA[corpus]("train", n):
            f.write(
                json.dumps({"anchor": t.anchor, "positive": t.positive, "negative": t.negative})
                + "\n"
            )
    return path


def train_text_adapter(base_path: str, output: Path, config: QuickstartConfig) -> Any:
    """Train an LCO adapter on ``base_path`` with generated text-only triplets and ``config``'s
    training settings (the quickstart's budget); the adapter lands in ``output/lco/adapter``,
    replacing an earlier run's. Returns the trainer's result."""
    output.mkdir(parents=True, exist_ok=True)
    data = write_text_triplets(output / "text_triplets.jsonl", config.n_triplets, config.corpus)
    return train(config.train_config(model=base_path, data=[str(data)], output=str(output / "lco")))


def format_table(base: dict, trained: dict) -> str:
    """R@1 and nDCG@10 per retrieval row, base → trained."""
    rows = [f"{'task':<22}{'metric':<10}{'base':>8}{'trained':>9}{'gain':>8}"]
    for task in base:
        for metric in ("R@1", "nDCG@10"):
            b, t = base[task][metric], trained[task][metric]
            rows.append(f"{task:<22}{metric:<10}{b:>8.3f}{t:>9.3f}{t - b:>+8.3f}")
    return "\n".join(rows)


def format_space_table(base: dict, trained: dict) -> str:
    """Final-layer anisotropy per modality and mutual-kNN alignment per pair, base → trained."""
    rows = [f"{'final layer':<24}{'base':>8}{'trained':>9}{'change':>8}"]
    for modality, values in base["anisotropy"].items():
        b, t = values[-1], trained["anisotropy"][modality][-1]
        rows.append(f"{'anisotropy ' + modality:<24}{b:>8.3f}{t:>9.3f}{t - b:>+8.3f}")
    for pair, values in base["mutual_knn"].items():
        b, t = values[-1], trained["mutual_knn"][pair][-1]
        rows.append(f"{'mutual kNN ' + pair:<24}{b:>8.3f}{t:>9.3f}{t - b:>+8.3f}")
    return "\n".join(rows)


def quickstart(config: QuickstartConfig) -> dict[str, Any]:
    """Train, evaluate and analyse as the module says; print the tables, write the files under
    ``config.output`` and return the report."""
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    base_path = backbone_path(config.model)
    times: dict[str, float] = {}

    t0 = time.perf_counter()
    print(f"[1/3] training the LCO adapter on text only ({config.max_steps} steps)")
    result = train_text_adapter(base_path, out, config)
    times["training"] = time.perf_counter() - t0

    print(f"[2/3] evaluating base and trained models on held-out data ({config.n_eval} per set)")
    t0 = time.perf_counter()
    base = OmniEncoder.from_pretrained(base_path, device="cpu")
    trained = OmniEncoder.from_pretrained(base_path, adapter=result.adapter, device="cpu")
    # both models read the same images with the same frozen reader: the trained one's readings
    # come from the cache (detection is most of an image's cost)
    with reading_cache():
        base_scores = evaluate_retrieval(base, config.n_eval) | evaluate_ood(base, config.n_ood)
        trained_scores = evaluate_retrieval(trained, config.n_eval) | evaluate_ood(
            trained, config.n_ood
        )
        times["evaluation"] = time.perf_counter() - t0

        print(f"       anisotropy and cross-modal alignment per layer ({config.n_analysis} pairs)")
        t0 = time.perf_counter()
        pairs = offline_pairs(config.n_analysis)
        space_base = analyze(base, pairs, k=config.k)
        space_trained = analyze(trained, pairs, k=config.k)
    space_plots = write_report(
        space_base, out, space_trained, ("base", "after text-only LCO training")
    )
    times["analysis"] = time.perf_counter() - t0

    print("[3/3] results")
    table = format_table(base_scores, trained_scores)
    table += "\n\n" + format_space_table(space_base, space_trained)
    print(table)
    plots = [retrieval_bars(base_scores, trained_scores, out / "retrieval.png"), *space_plots]
    report = {
        "config": vars(config),
        "base": base_scores,
        "trained": trained_scores,
        "space": {"base": space_base, "trained": space_trained},
        "final_loss": result.final_loss,
        "seconds": times,
        "plots": [str(p) for p in plots],
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "table.txt").write_text(table + "\n")
    print(f"\nwrote {out / 'report.json'} and {', '.join(str(p) for p in plots)}")
    return report
