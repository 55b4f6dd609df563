"""EmotionTalk speech-emotion-recognition recipe: the Python side of the Kaldi/ESPnet-style shell recipe.

Modules are small and named for what they do; the shell recipe (run.sh) composes them through the
Kaldi data directory contract described in docs/DESIGN.md.
"""

__version__ = "0.1.0"
