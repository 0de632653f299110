"""The ``wordnet`` corpus with a given share of dictionary entries, through the adapter sweep.

``python run.py DEFINITIONS_PER_TEN OUT`` sets
``lcoemb.synthetic.general.DEFINITIONS_PER_TEN`` (3 is the corpus's default, 0 keeps only the
synonym positives and sibling negatives) and runs ``../sweep/run.py`` on ``lco-mini-base`` with
the quickstart's settings (lr 1e-4, 60 steps, rank 16, attention projections, seed 0) and the
``wordnet`` corpus. Writes OUT/wordnet-....json; OUT/base.json is reused when present.
"""

import runpy
import sys
from pathlib import Path

import lcoemb.synthetic.general as general

general.DEFINITIONS_PER_TEN = int(sys.argv[1])
sweep = Path(__file__).parent.parent / "sweep" / "run.py"
sys.argv = [str(sweep), "lco-mini-base", sys.argv[2], "1e-4", "60", "16", "wordnet", "0"]
sys.argv.append("q_proj,k_proj,v_proj,o_proj")
runpy.run_path(str(sweep), run_name="__main__")
