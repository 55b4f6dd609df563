"""Speech captioning: frame-level features -> adaptor -> decoder, decoding, the caption metrics.

Modules depend downward: ``text`` (segmentation, tokenizer) <- ``data`` (captions + frames) <- ``models``
<- ``train`` / ``score``; ``metrics`` depends on ``text`` only.  The caption kinds are tasks of kind
``caption`` (:mod:`etser.tasks.caption`, declared in conf/tasks.yaml): the task owns the captions read, the
selection metric, the metrics and the baselines.
"""
