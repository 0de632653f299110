"""LCO-Mini, the embedded default backbone: a small multimodal LLM built offline from frozen
towers (:mod:`~lcoemb.mini.towers`, :mod:`~lcoemb.mini.reader`), SmolLM2 and trained projectors
(:mod:`~lcoemb.mini.model`), shipped as the named models of :mod:`~lcoemb.mini.registry`
(``weights/``). Its stage-1 pretraining is :mod:`lcoemb.recipes.pretrain`; its data,
:mod:`lcoemb.synthetic`."""
