"""Stages 3-5, the learning side: the one training loop (:mod:`etser.learn.loop`) and the one config loader
(:mod:`etser.learn.config`) that every trainer (classifier heads, fusion models, caption decoders) uses."""
