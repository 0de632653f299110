"""Recipes that drive the library end to end, beside it the way ``open_clip_train`` sits beside
``open_clip``: nothing in the library imports them.

* :mod:`lcoemb.recipes.pretrain`: stage 1 of LCO-Mini, generative pretraining of the projectors
  (``lcoemb mini pretrain``, ``lcoemb mini export``);
* :mod:`lcoemb.recipes.quickstart`: text-only LCO training on LCO-Mini, then retrieval and
  embedding-space analysis (``lcoemb quickstart``);
* :mod:`lcoemb.recipes.ablation`: text-only against mixed against multimodal-only LCO training
  against none, on the quickstart's budget (``lcoemb mini ablation``);
* :mod:`lcoemb.recipes.grsl`: both axes of the Generation-Representation Scaling Law measured
  on backbones (``lcoemb grsl measure``).

Their data comes from :mod:`lcoemb.synthetic`.
"""
