"""Classification tasks: which label file of the data dir, which classes.

The seeds' four columns are Speech(Four), Multi(Four), Speech(All), Multi(All): "Speech" is the
audio-modality label (utt2emo_audio), "Multi" the multimodal one (utt2emo_multi).
"""

from __future__ import annotations

from dataclasses import dataclass

# Class order of the official label files (npz codes 0..6).
EMOTIONS_ALL = ("neutral", "happy", "sad", "angry", "surprised", "disgusted", "fearful")
EMOTIONS_FOUR = EMOTIONS_ALL[:4]

# task prefix -> label source (suffix of data/<set>/utt2emo_<source>)
LABEL_SOURCES = {"speech": "audio", "multi": "multi", "text": "text", "video": "video"}
SEED_TASKS = ("speech_four", "multi_four", "speech_all", "multi_all")
COLUMN_TITLES = {"speech_four": "Speech(Four)", "multi_four": "Multi(Four)",
                 "speech_all": "Speech(All)", "multi_all": "Multi(All)",
                 "text_four": "Text(Four)", "text_all": "Text(All)",
                 "video_four": "Video(Four)", "video_all": "Video(All)"}


@dataclass(frozen=True)
class Task:
    name: str
    label_file: str          # file name inside a data dir
    classes: tuple[str, ...]

    def title(self) -> str:
        return COLUMN_TITLES.get(self.name, self.name)


def get_task(name: str) -> Task:
    """``speech_four`` -> Task('speech_four', 'utt2emo_audio', four classes)."""
    try:
        prefix, subset = name.split("_", 1)
        source = LABEL_SOURCES[prefix]
        classes = {"four": EMOTIONS_FOUR, "all": EMOTIONS_ALL}[subset]
    except (ValueError, KeyError):
        known = [f"{p}_{s}" for p in LABEL_SOURCES for s in ("four", "all")]
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(known)}") from None
    return Task(name, f"utt2emo_{source}", classes)


def all_task_names() -> list[str]:
    return [f"{p}_{s}" for p in LABEL_SOURCES for s in ("four", "all")]
