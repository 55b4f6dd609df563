"""EmotionTalk-specific code: release parsing (stage 1), the synthetic mini corpus, label names.

Corpus-specific by location (Kaldi/ESPnet recipes keep such code in ``local/``): the generic package
``etser`` never imports it. ``path.sh`` and ``pytest.ini`` put ``local/`` on the Python path.
"""
