"""The lr experiment of README.md: `python run.py 2e-4` trains the quickstart's general-text adapter
at that learning rate, then scores generation kept (20 items per task) and in-distribution
retrieval (50 items per set) into runs/general-lrLR/gentle.json."""

import json, sys, time
from pathlib import Path
from lcoemb import OmniEncoder
from lcoemb.config import QuickstartConfig
from lcoemb.recipes.quickstart import train_text_adapter
from lcoemb.mini.registry import backbone_path
from lcoemb.evaluation.generation import generation_retained, format_retained
from lcoemb.evaluation.retrieval import evaluate_retrieval

lr = float(sys.argv[1])
out = Path(f"runs/general-lr{sys.argv[1]}")
cfg = QuickstartConfig(output=str(out), lr=lr)
base = backbone_path("lco-mini-base")
t = time.time()
res = train_text_adapter(base, out, cfg)
print("trained", time.time() - t, res.final_loss, flush=True)
enc = OmniEncoder.from_pretrained(base, adapter=res.adapter, device="cpu")
r = generation_retained(enc, 20, ["scene", "digit", "clip", "speech"])
print(format_retained(r), flush=True)
ret = evaluate_retrieval(enc, 50)
print({k: v["R@1"] for k, v in ret.items()}, flush=True)
json.dump({"generation": r, "retrieval": ret}, open(out / "gentle.json", "w"), indent=2)
