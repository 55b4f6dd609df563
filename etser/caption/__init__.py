"""Speech captioning: frame-level features -> adaptor -> decoder, decoding, the caption metrics, baselines.

Modules depend downward: ``text`` (segmentation, tokenizer) <- ``data`` (captions + frames) <- ``models``
<- ``train`` / ``score``; ``metrics`` and ``baselines`` depend on ``text`` and ``data`` only.
"""

KINDS = ("speaker", "style", "emotion", "overall")
