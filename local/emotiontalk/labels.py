"""EmotionTalk's label names and label sources."""

from __future__ import annotations

# Class order of the official label files (npz codes 0..6).
EMOTIONS_ALL = ("neutral", "happy", "sad", "angry", "surprised", "disgusted", "fearful")
EMOTIONS_FOUR = EMOTIONS_ALL[:4]

# task prefix -> label source (suffix of data/<set>/utt2emo_<source>)
LABEL_SOURCES = {"speech": "audio", "multi": "multi", "text": "text", "video": "video"}
