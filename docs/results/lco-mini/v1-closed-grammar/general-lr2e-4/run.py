"""The learning-rate experiment of README.md: ``python run.py 2e-4`` trains the quickstart's
general-text adapter at that learning rate on lco-mini-base, then scores the generation it keeps
(20 items per task) and in-distribution retrieval (50 items per set) into
``runs/general-lrLR/gentle.json``."""

import json
import sys
import time
from pathlib import Path

from lcoemb import OmniEncoder
from lcoemb.config import QuickstartConfig
from lcoemb.evaluation.generation import format_retained, generation_retained
from lcoemb.evaluation.retrieval import evaluate_retrieval
from lcoemb.mini.registry import backbone_path
from lcoemb.recipes.quickstart import train_text_adapter

lr = float(sys.argv[1])
out = Path(f"runs/general-lr{sys.argv[1]}")
base = backbone_path("lco-mini-base")
start = time.time()
result = train_text_adapter(base, out, QuickstartConfig(output=str(out), lr=lr))
print("trained", time.time() - start, result.final_loss, flush=True)
encoder = OmniEncoder.from_pretrained(base, adapter=result.adapter, device="cpu")
kept = generation_retained(encoder, 20, ["scene", "digit", "clip", "speech"])
print(format_retained(kept), flush=True)
retrieval = evaluate_retrieval(encoder, 50)
print({k: v["R@1"] for k, v in retrieval.items()}, flush=True)
(out / "gentle.json").write_text(json.dumps({"generation": kept, "retrieval": retrieval}, indent=2))
