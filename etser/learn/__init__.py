"""Stages 3-5 and inference, the learning side: the one training loop (:mod:`etser.learn.loop`), the one config
loader (:mod:`etser.learn.config`) that every trainer (classifier heads, fusion models, caption decoders) uses,
and inference with what was learned (:mod:`etser.learn.infer`)."""
