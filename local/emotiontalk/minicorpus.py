"""The embedded mini corpus: a small synthetic EmotionTalk release, generated deterministically.

It lets the whole recipe (stages 1-5) run in minutes on 2 CPU cores with no download, and it exercises
stage 1 on the real release's layout and quirks:

    <out>/Audio/Audio/{json,wav}/G00001/G00001_02/G00001_02_01/G00001_02_01_002.{json,wav}
    <out>/Text/json/...                  (one modality is nested one level deeper, like some tar extractions)
    <out>/Video/json/...
    <out>/Multimodal/Multimodal/{json,mp4}/...
    <out>/mini_corpus.json               (marker: parameters, generator version, counts, tree hash)

Size (scale 1.0): 600 utterances, 40 per group in 2 dialogues, 1.0-3.0 s each (20 min of audio), 3,629
files, 138 MB; generation takes 31 s wall on a quiet 2-core machine (54 s when busy, 118 s
when 9 agents shared it), of which the video is about 60 %.
``--scale`` multiplies the utterances per group.

All 15 groups with their real actor pairs and the official split (val = G00001 + G00012, test = G00003 +
G00015; val and test share speakers 02 and 13).  Quirks: ``file_path`` (Audio JSON) or ``file_name``;
``speaker_id`` as int or zero-padded string; transcript markup (``[over/]…[/over]``, ``[over]…[over]``,
full-width ``【over/】…【/over】``, malformed ``[[/over]``, ``[laughing]``, ``[Sobbing]`` …); a UTF-8 BOM in
some JSON; macOS ``._*`` debris; WAV at 44.1 kHz (most) or 16 kHz, mono or stereo, PCM16.  No file is
broken: bad inputs are made by the tests that need them.

Labels: the Multimodal label is drawn first (a quota per group); the Audio, Video and Text labels each agree
with it with the real corpus's rates (68, 66, 42 %) and otherwise follow the real confusion, independently
of each other, so the three modalities together predict the Multimodal label better than any one.

- Audio: a source-filter synthesis whose AUDIO label lives in the prosody (pitch level, range and contour,
  syllable rate, energy, spectral tilt, breathiness, jitter, tremor); speakers differ in base pitch, vocal
  tract length, speaking rate, level, voice quality and microphone colouring.  One syllable per character
  of the transcript.
- Video (``Multimodal/mp4``): 128x128 H.264 at 10 fps with the 16 kHz speech as a mono AAC track; a
  synthetic face whose expression (mouth curvature and opening, brow tilt and height, eye opening) carries
  the VIDEO label, a mouth that opens with the loudness of the speech, head drift, blinks and sensor noise;
  speakers differ in skin, hair and background colour, face size and position.
- Text: one or two emotional words of the TEXT label (none for neutral) among neutral filler words, plus
  the markup quirks.
- Captions (Audio ``sourceAttr``: speaker, style, emotion, overall): several templates per kind filled
  with the speaker's sex, age and pitch, the speaking rate and loudness, and the AUDIO label; the wording is
  chosen by those attributes (no random choice), so every caption is learnable from what is heard.

Every random draw comes from a ``numpy`` generator seeded by
(seed, what is drawn), so a corpus is byte-identical for the same (seed, scale) and the same software on
the same kind of CPU; elsewhere (other numpy SIMD kernels) a few samples may differ by one PCM step, the
labels, transcripts and layout never.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import os
import re
import resource
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal

from emotiontalk.labels import EMOTIONS_ALL

# Bump when anything changes what is written: a marker with another version is regenerated.
VERSION = 3
MARKER = "mini_corpus.json"
SR = 16000                # synthesis rate; 44.1 kHz files are upsampled from it
HOP, NFFT = 128, 512      # the formant filter runs in the STFT domain, one envelope per 8 ms frame

# group -> (actor pair, first dialogue numbers): the real pairs and dialogue numbering of the release.
GROUPS = {
    1: ("01", "02", 2), 2: ("07", "08", 1), 3: ("02", "13", 11), 4: ("05", "09", 1), 5: ("06", "10", 3),
    6: ("07", "12", 1), 7: ("11", "14", 1), 8: ("07", "11", 1), 9: ("12", "14", 1), 10: ("05", "08", 1),
    11: ("06", "09", 1), 12: ("13", "15", 1), 13: ("16", "17", 1), 14: ("18", "19", 1), 15: ("20", "21", 1),
}
SPEAKERS = sorted({s for a, b, _ in GROUPS.values() for s in (a, b)})
UTTS_PER_GROUP = 40
DIALOGUES_PER_GROUP = 2

# Multimodal-label quota per 40 utterances of a group, in EMOTIONS_ALL order (neutral, happy, sad, angry,
# surprised, disgusted, fearful): neutral most frequent as in the real corpus, but every class in every
# group so each split has them all.
CLASS_QUOTA = (11, 6, 6, 6, 4, 4, 3)

# How often each modality's label agrees with the multimodal label: the real corpus's rates (official label
# files).  Each modality's label is drawn from the multimodal one independently of the others, so the
# modalities are conditionally independent views of it and fusing them predicts it better than any one.
AGREEMENT = {"audio": 0.68, "video": 0.66, "text": 0.42}
# Where a disagreeing label goes: the off-diagonal of the real audio-vs-Multi confusion (official label
# files), per label, in EMOTIONS_ALL order (the diagonal entry is ignored).
CONFUSION = {
    "neutral":   (0, .15, .03, .03, .07, .06, .03),
    "happy":     (.08, 0, .005, .005, .04, .01, .01),
    "sad":       (.16, .04, 0, .01, .01, .01, .03),
    "angry":     (.06, .01, .01, 0, .02, .07, .01),
    "surprised": (.18, .15, .01, .04, 0, .04, .05),
    "disgusted": (.19, .05, .01, .22, .05, 0, .02),
    "fearful":   (.14, .02, .03, .02, .05, .03, 0),
}
# Continuous sentiment (Multimodal "Continuous label_result") in steps of 0.2, by Multi label:
# (mean, std, min, max) in steps; neutral slightly negative like the real mean of -0.55.
SENTIMENT = {
    "neutral": (-1, 1.5, -4, 2), "happy": (6, 2, 2, 10), "sad": (-7, 2, -10, -3), "angry": (-7, 2, -10, -3),
    "surprised": (2, 2.5, -2, 7), "disgusted": (-5, 2, -9, -2), "fearful": (-5, 2, -9, -2),
}


@dataclass(frozen=True)
class EmotionStyle:
    """How an emotion departs from neutral speech; scaled per utterance by an intensity."""
    f0_st: float        # pitch level shift, semitones
    range_st: float     # pitch range, semitones
    contour: str        # utterance-level pitch shape
    rate: float         # syllables per second
    energy_db: float    # level relative to neutral
    tilt_db: float      # extra spectral tilt, dB per octave (negative: darker)
    open_q: float       # glottal open quotient: low = tense/pressed, high = lax/breathy
    breath: float       # aspiration noise share
    jitter: float       # relative F0 perturbation
    tremor_st: float    # 5-7 Hz vibrato depth, semitones
    f1_shift: float     # relative formant shifts (wider mouth, smiling lips)
    f2_shift: float
    pause: float        # pause length factor at commas


STYLES = {
    "neutral":   EmotionStyle(0.0, 3.0, "decl", 4.6, 0.0, 0.0, 0.55, 0.06, 0.010, 0.0, 0.00, 0.00, 1.0),
    "happy":     EmotionStyle(3.5, 7.0, "arch", 5.3, 4.0, 2.0, 0.50, 0.04, 0.010, 0.0, 0.06, 0.07, 0.8),
    "sad":       EmotionStyle(-2.5, 1.5, "flat", 3.2, -7.0, -4.0, 0.72, 0.30, 0.020, 0.0, -0.05, -0.04, 1.8),
    "angry":     EmotionStyle(2.5, 6.0, "fall", 5.6, 8.0, 5.0, 0.38, 0.02, 0.020, 0.0, 0.12, 0.02, 0.6),
    "surprised": EmotionStyle(5.5, 9.0, "rise", 4.8, 4.0, 2.0, 0.50, 0.08, 0.012, 0.0, 0.08, 0.03, 0.9),
    "disgusted": EmotionStyle(-1.5, 4.0, "fall", 3.7, -1.0, -1.0, 0.45, 0.12, 0.035, 0.0, -0.03, -0.06, 1.4),
    "fearful":   EmotionStyle(4.5, 2.5, "flat", 6.2, -3.0, -2.5, 0.66, 0.28, 0.030, 0.6, 0.02, 0.02, 0.7),
}

# Adult male vowel targets F1-F4 (Hz); speakers scale them by their vocal tract length factor.
VOWELS = np.array([
    [730, 1090, 2440, 3400],   # a
    [270, 2290, 3010, 3700],   # i
    [300, 870, 2240, 3300],    # u
    [500, 1500, 2500, 3500],   # e (schwa-like)
    [570, 840, 2410, 3400],    # o
    [280, 1900, 2400, 3500],   # ü
], dtype=float)
BANDWIDTHS = np.array([70.0, 100.0, 140.0, 180.0, 250.0])
F5 = 4400.0

# Video: small square H.264 frames at a low rate (the face, not the picture quality, carries the label).
# A multiple of 64 wide: at 112 pixels x264's output varied from run to run (it read row padding).
VIDEO_SIZE, FPS = 128, 10
# Facial expression per VIDEO label: (smile: mouth corners up, mouth opening, brow tilt: inner ends up,
# brow raise, eye opening); scaled from neutral by a per-utterance intensity.
EXPRESSIONS = {
    "neutral":   (0.0, 0.05, 0.0, 0.0, 1.0),
    "happy":     (1.0, 0.30, 0.0, 0.15, 0.65),
    "sad":       (-0.8, 0.0, 1.0, 0.0, 0.7),
    "angry":     (-0.5, 0.15, -1.0, -0.5, 0.85),
    "surprised": (0.0, 1.0, 0.1, 1.0, 1.45),
    "disgusted": (-0.7, 0.1, -0.6, -0.3, 0.45),
    "fearful":   (-0.3, 0.55, 0.9, 0.7, 1.35),
}

EMOTION_ZH = {"neutral": "中性", "happy": "开心", "sad": "悲伤", "angry": "生气", "surprised": "惊讶",
              "disgusted": "厌恶", "fearful": "害怕"}
# Transcript vocabulary: a syllable is a character, so a transcript fixes the syllable count.
WORDS = ("我们", "今天", "然后", "就是", "那个", "你知道吗", "其实", "朋友", "后来", "他说", "怎么",
         "真的", "一起", "回家", "吃饭", "工作", "时候", "觉得", "还是", "已经", "这样", "东西", "学校",
         "电话", "没有", "可以", "一下", "事情", "老师", "妈妈", "周末", "出去", "看看", "突然", "天气",
         "昨天", "晚上", "知道", "不行", "对啊", "嗯", "哎", "好", "去", "说", "走", "看", "想", "那",
         "哪里", "为什么", "上班", "房子", "礼物", "比赛", "消息", "考试", "电影", "地铁", "医院")
# Words that carry the TEXT label: one or two per transcript (none for neutral), the rest neutral filler.
EMOTION_WORDS = {
    "happy": ("开心", "高兴", "太好了", "哈哈", "喜欢", "真棒", "幸福", "好玩", "谢谢你", "真不错"),
    "sad": ("难过", "伤心", "唉", "算了吧", "失望", "可惜", "孤单", "想哭", "心疼", "遗憾"),
    "angry": ("生气", "凭什么", "够了", "烦死了", "讨厌", "气死我了", "闭嘴", "太过分", "混蛋", "受够了"),
    "surprised": ("真的吗", "天哪", "居然", "竟然", "没想到", "不会吧", "怎么可能", "哇", "什么", "吓一跳"),
    "disgusted": ("咦", "恶心", "好脏", "受不了", "真臭", "呕", "太难吃", "反感", "嫌弃", "真恶心"),
    "fearful": ("怎么办", "别", "害怕", "好可怕", "救命", "吓死了", "紧张", "不敢", "危险", "担心"),
}
NONVERBAL = {"happy": ("[laughing]",), "sad": ("[Sobbing]", "[crying]"), "angry": ("[screaming]",),
             "fearful": ("[screaming]",)}
END_PUNCT = {"neutral": "。", "happy": "！", "sad": "。", "angry": "！", "surprised": "？",
             "disgusted": "。", "fearful": "。"}

# macOS AppleDouble header, as left by archives made on a Mac (``._name`` files).
APPLEDOUBLE = (b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        \x00\x02"
               b"\x00\x00\x00\x09\x00\x00\x00\x32\x00\x00\x0e\xb0" + b"\x00" * 52)


def _rng(seed: int, *what: int) -> np.random.Generator:
    """Independent generator per (seed, what): each utterance is the same whatever else is generated."""
    return np.random.default_rng(np.random.SeedSequence([seed, *what]))


@dataclass
class Speaker:
    sid: str
    female: bool
    f0: float             # base pitch, Hz
    vtl: float            # formant scale (shorter vocal tract: higher)
    rate: float           # speaking rate factor
    level_db: float
    tilt_db: float
    breath: float
    jitter: float
    range_f: float
    floor_db: float       # recording noise floor
    mic_db: np.ndarray = field(repr=False)   # microphone colouring at the STFT bins
    age: str = "青年"
    # appearance in the video: RGB colours, face half-axes and centre in pixels
    skin: tuple[int, int, int] = (220, 180, 150)
    hair: tuple[int, int, int] = (40, 30, 25)
    background: tuple[int, int, int] = (90, 100, 110)
    face_w: float = 30.0
    face_h: float = 38.0
    cx: float = VIDEO_SIZE / 2
    cy: float = VIDEO_SIZE / 2


def make_speakers(seed: int) -> dict[str, Speaker]:
    freqs = np.fft.rfftfreq(NFFT, 1 / SR)
    speakers = {}
    for i, sid in enumerate(SPEAKERS):
        r = _rng(seed, 1, int(sid))
        female = i % 2 == 0       # fixed alternation: both sexes in every split
        f0 = r.uniform(185, 245) if female else r.uniform(100, 140)
        vtl = r.uniform(1.10, 1.20) if female else r.uniform(0.94, 1.03)
        logf = np.log2(np.maximum(freqs, 60) / 60)
        mic = sum(r.uniform(-1.2, 1.2) * np.cos(k * logf * 0.55 + r.uniform(0, 2 * np.pi)) for k in (1, 2, 3))
        speakers[sid] = Speaker(
            sid=sid, female=female, f0=f0, vtl=vtl, rate=r.uniform(0.9, 1.1), level_db=r.uniform(-2.5, 2.5),
            tilt_db=r.uniform(-1.5, 1.5), breath=r.uniform(0.0, 0.06), jitter=r.uniform(0.004, 0.012),
            range_f=r.uniform(0.85, 1.15), floor_db=r.uniform(-66, -58), mic_db=mic,
            age="中年" if r.random() < 0.25 else "青年")
        # drawn after the voice so that the voices do not depend on the look
        tone = r.uniform(0, 1)
        skin = tuple(int(c) for c in np.array([235, 200, 170]) * (1 - tone) + np.array([150, 105, 75]) * tone)
        face_w = VIDEO_SIZE * r.uniform(0.23, 0.30)
        speakers[sid].__dict__.update(
            skin=skin, hair=tuple(int(c) for c in r.integers(15, 110, 3)),
            background=tuple(int(c) for c in r.integers(60, 200, 3)), face_w=face_w,
            face_h=face_w * r.uniform(1.15, 1.35), cx=VIDEO_SIZE * (0.5 + r.uniform(-0.04, 0.04)),
            cy=VIDEO_SIZE * (0.5 + r.uniform(-0.03, 0.04)))
    return speakers


@dataclass
class Utterance:
    uid: str
    group: int
    dialogue: int
    speaker: str
    turn: int
    labels: dict[str, str]          # label source (audio, multi, text, video) -> emotion
    sentiment: float
    content: str                    # raw transcript with markup
    n_syll: int
    pauses: tuple[int, ...]         # syllable indices followed by a comma pause
    prosody: dict[str, float | str]
    sample_rate: int
    channels: int
    quirks: dict[str, bool]

    @property
    def emotion(self) -> str:
        return self.labels["audio"]

    @property
    def rel_dir(self) -> str:
        g, d, s = f"G{self.group:05d}", f"G{self.group:05d}_{self.dialogue:02d}", self.uid.rsplit("_", 1)[0]
        return f"{g}/{d}/{s}"


def _allocate(n: int, weights) -> np.ndarray:
    """Split n into integer counts proportional to weights (largest remainder), >= 1 each when n allows."""
    w = np.asarray(weights, float) / sum(weights)
    counts = np.floor(n * w).astype(int)
    if n >= len(w):
        counts = np.maximum(counts, 1)
    while counts.sum() > n:
        counts[np.argmax(counts)] -= 1
    rem = n * w - counts
    for k in np.argsort(-rem, kind="stable")[: n - counts.sum()]:
        counts[k] += 1
    return counts


def _other_label(r: np.random.Generator, emo: str, agree: float) -> str:
    if r.random() < agree:
        return emo
    p = np.array(CONFUSION[emo], float)
    p[EMOTIONS_ALL.index(emo)] = 0
    return EMOTIONS_ALL[r.choice(len(p), p=p / p.sum())]


def _transcript(r: np.random.Generator, emo: str, n_syll: int) -> tuple[str, tuple[int, ...]]:
    """Chinese-looking text of exactly n_syll characters, with the release's markup; comma positions."""
    emotional = []
    if emo in EMOTION_WORDS:
        for _ in range(1 + int(n_syll >= 8 and r.random() < 0.6)):
            fit = [w for w in EMOTION_WORDS[emo] if len(w) <= n_syll - sum(map(len, emotional))]
            if fit:
                emotional.append(str(r.choice(fit)))
    filler: list[str] = []
    room = n_syll - sum(map(len, emotional))
    while sum(map(len, filler)) < room:
        filler.append(str(r.choice(WORDS)))
    excess = sum(map(len, filler)) - room
    if excess:
        filler[-1] = filler[-1][: len(filler[-1]) - excess]
    filler = [w for w in filler if w]
    words = list(filler)
    for w in emotional:       # anywhere in the sentence, never cut
        words.insert(int(r.integers(0, len(words) + 1)), w)
    # commas after some words (never the last): a pause in the audio
    pieces, pauses, pos = [], [], 0
    for i, w in enumerate(words):
        pos += len(w)
        pieces.append(w)
        if i < len(words) - 1 and pos >= 3 and r.random() < 0.18:
            pieces.append("，")
            pauses.append(pos - 1)
    # overlap markup around a span of pieces
    u = r.random()
    if u < 0.36 and len(pieces) >= 2:
        i = int(r.integers(0, len(pieces) - 1))
        j = int(r.integers(i + 1, min(len(pieces), i + 3) + 1))
        v = r.random()
        if v < 0.75:
            opened, closed = "[over/]", "[/over]"
        elif v < 0.85:
            opened, closed = "[over]", "[over]"
        elif v < 0.93:
            opened, closed = "【over/】", "【/over】"
        else:
            opened, closed = ("[over/]", str(r.choice(["[[/over]", "[/over/]"])))
        pieces = pieces[:i] + [opened] + pieces[i:j] + [closed] + pieces[j:]
    text = "".join(pieces)
    if emo in NONVERBAL and r.random() < 0.25:
        tag = str(r.choice(NONVERBAL[emo]))
        text = tag + text if r.random() < 0.5 else text + tag
    if r.random() < 0.05:
        text += "[interrupted]"
    return text + END_PUNCT[emo], tuple(pauses)


def _prosody(r: np.random.Generator, emo: str) -> dict[str, float | str]:
    """Per-utterance prosody: the emotion's departure from neutral, scaled by a random intensity."""
    s, n = STYLES[emo], STYLES["neutral"]
    k = r.uniform(0.55, 1.25) if emo != "neutral" else 0.0

    def mix(attr: str, sd: float) -> float:
        base, target = getattr(n, attr), getattr(s, attr)
        return float(base + k * (target - base) + r.normal(0, sd))

    return {
        "intensity": round(float(k), 3), "contour": s.contour,
        "f0_st": mix("f0_st", 1.0), "range_st": max(0.8, mix("range_st", 0.6)),
        "rate": max(2.4, mix("rate", 0.3)), "energy_db": mix("energy_db", 1.5),
        "tilt_db": mix("tilt_db", 0.8), "open_q": float(np.clip(mix("open_q", 0.03), 0.3, 0.8)),
        "breath": float(np.clip(mix("breath", 0.02), 0.0, 0.5)), "jitter": max(0.002, mix("jitter", 0.003)),
        "tremor_st": max(0.0, mix("tremor_st", 0.05)), "f1_shift": mix("f1_shift", 0.02),
        "f2_shift": mix("f2_shift", 0.02), "pause": max(0.4, mix("pause", 0.1)),
    }


def plan_corpus(seed: int = 0, scale: float = 1.0) -> list[Utterance]:
    """Everything about every utterance except its audio, in group, dialogue, turn order."""
    if not 0 < scale <= 20:
        raise ValueError(f"scale must be in (0, 20], got {scale}")
    speakers = make_speakers(seed)
    n_group = max(2, round(UTTS_PER_GROUP * scale))
    utts: list[Utterance] = []
    for group, (spk_a, spk_b, first_dialogue) in GROUPS.items():
        r = _rng(seed, 2, group)
        emotions = [e for e, c in zip(EMOTIONS_ALL, _allocate(n_group, CLASS_QUOTA)) for _ in range(c)]
        emotions = [emotions[i] for i in r.permutation(n_group)]
        per_dialogue = _allocate(n_group, [1] * DIALOGUES_PER_GROUP)
        ei = 0
        for di, n_dia in enumerate(per_dialogue):
            dialogue = first_dialogue + di
            spk = spk_a if r.random() < 0.5 else spk_b
            turn = 0
            for _ in range(n_dia):
                turn += 2 if r.random() < 0.06 else 1      # the release has gaps in turn numbers
                uid = f"G{group:05d}_{dialogue:02d}_{spk}_{turn:03d}"
                u = _rng(seed, 3, group, dialogue, turn)
                emo = emotions[ei]
                ei += 1
                labels = {"multi": emo}
                labels.update({src: _other_label(u, emo, p) for src, p in AGREEMENT.items()})
                mean, sd, lo, hi = SENTIMENT[labels["multi"]]
                sentiment = round(0.2 * int(np.clip(round(u.normal(mean, sd)), lo, hi)), 1) + 0.0
                prosody = _prosody(u, labels["audio"])
                rate = prosody["rate"] * speakers[spk].rate
                target = u.uniform(1.15, 2.8)
                n_syll = int(max(3, round((target - 0.3) * rate)))
                content, pauses = _transcript(u, labels["text"], n_syll)
                sample_rate = 44100 if u.random() < 0.75 else 16000
                channels = 2 if u.random() < 0.4 else 1
                quirks = {
                    "bom": u.random() < 0.08, "int_speaker_id": u.random() < 0.45,
                    "audio_file_name": u.random() < 0.1, "no_caption": u.random() < 0.12,
                    "appledouble": u.random() < 0.015,
                }
                utts.append(Utterance(uid, group, dialogue, spk, turn, labels,
                                      sentiment, content, n_syll, pauses, prosody, sample_rate, channels, quirks))
                if r.random() < 0.8:       # mostly alternating turns, sometimes the same speaker again
                    spk = spk_b if spk == spk_a else spk_a
    return utts


# ---------------------------------------------------------------- synthesis

_TONES = (lambda u: 0.5 + 0 * u, lambda u: -0.5 + u, lambda u: -0.3 - 0.6 * np.sin(np.pi * u),
          lambda u: 0.7 - 1.4 * u)   # Mandarin tones 1-4, in units of half the pitch range


def _contour(shape: str, x: np.ndarray) -> np.ndarray:
    """Utterance-level pitch shape over progress x in [0, 1], in units of the pitch range."""
    if shape == "decl":
        return 0.5 - x
    if shape == "arch":
        return 0.8 * np.sin(np.pi * x) - 0.3
    if shape == "rise":
        return -0.3 + 1.4 * np.clip((x - 0.6) / 0.4, 0, 1) ** 2
    if shape == "fall":
        return 0.7 - 1.2 * x
    return 0.2 * (0.5 - x)       # flat


def _smooth(x: np.ndarray, width: int, axis: int = 0) -> np.ndarray:
    k = np.hanning(width + 2)[1:-1]
    k /= k.sum()
    pad = [(0, 0)] * x.ndim
    pad[axis] = (width // 2, width - 1 - width // 2)
    xp = np.pad(x, pad, mode="edge")
    return np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), axis, xp)


def _stft_filter(x: np.ndarray, env: np.ndarray) -> np.ndarray:
    """Time-varying filtering: frame k (centred on sample k*HOP) is multiplied by the magnitude env[k].

    Hann analysis and synthesis windows, overlap-add normalised by the summed squared window.
    """
    n, q = len(x), NFFT // HOP
    e = q // 2                                  # extra frames at each end so the edges get full overlap
    env = np.pad(env, ((e, e), (0, 0)), mode="edge")
    win = np.hanning(NFFT + 1)[:-1]             # periodic Hann
    offset = NFFT // 2 + e * HOP
    xp = np.pad(x, (offset, NFFT + e * HOP))
    frames = np.lib.stride_tricks.sliding_window_view(xp, NFFT)[::HOP][: len(env)] * win
    y = np.fft.irfft(np.fft.rfft(frames, axis=1) * env, n=NFFT, axis=1) * win
    blocks = np.zeros((len(env) + q - 1, HOP))
    for i in range(q):
        blocks[i: i + len(env)] += y[:, i * HOP: (i + 1) * HOP]
    wsum = np.sum(win.reshape(q, HOP) ** 2, axis=0)   # constant for Hann at 75 % overlap
    return (blocks / wsum).ravel()[offset: offset + n]


def synthesize(utt: Utterance, spk: Speaker, seed: int) -> tuple[np.ndarray, float, float]:
    """16 kHz mono float signal of one utterance; also speech start and end in seconds."""
    r = _rng(seed, 4, utt.group, utt.dialogue, utt.turn)
    p = utt.prosody
    rate = float(p["rate"]) * spk.rate
    n_syll = utt.n_syll

    # timing: syllable onsets and durations, comma pauses, leading/trailing silence; 1-3 s in all
    durs = r.uniform(0.75, 1.25, n_syll) / rate
    gaps = np.zeros(n_syll)
    for k in utt.pauses:
        gaps[k] = r.uniform(0.12, 0.28) * float(p["pause"])
    lead, tail = r.uniform(0.08, 0.2), r.uniform(0.1, 0.25)
    speech = durs.sum() + gaps.sum()
    squeeze = min(1.0, (3.0 - lead - tail - 0.01) / speech)
    durs, gaps = durs * squeeze, gaps * squeeze
    onsets = lead + np.concatenate([[0.0], np.cumsum(durs + gaps)[:-1]])
    end = float(onsets[-1] + durs[-1])
    total = max(1.0, end + tail)
    n = int(total * SR)
    t = np.arange(n) / SR
    n_frames = n // HOP + 1
    tf = np.arange(n_frames) * HOP / SR

    def syllable_at(times):
        k = np.clip(np.searchsorted(onsets, times, side="right") - 1, 0, n_syll - 1)
        u = (times - onsets[k]) / durs[k]
        return k, u, (times >= onsets[0]) & (u < 1)

    # per-syllable draws
    cons = np.where(r.random(n_syll) < 0.65, r.uniform(0.15, 0.32, n_syll), 0.0)
    amp = r.uniform(0.65, 1.0, n_syll) ** max(0.2, 1.0 + 0.1 * float(p["energy_db"]))   # loud: stronger accents
    cons_amp = r.uniform(0.1, 0.3, n_syll)
    vowels = r.integers(0, len(VOWELS), n_syll)
    tones = r.integers(0, 4, n_syll)
    fric_hi = r.random(n_syll) < 0.5

    # sample-level envelopes: voiced nucleus and consonant noise
    k, u, inside = syllable_at(t)
    cf = cons[k]
    w = np.clip((u - cf) / (1 - cf), 0, 1)
    dv = durs[k] * (1 - cf)
    att = np.clip(w * dv / 0.025, 0, 1)
    rel = np.clip((1 - w) * dv / 0.045, 0, 1)
    venv = np.where(inside & (u >= cf), np.sin(att * np.pi / 2) ** 2 * np.sin(rel * np.pi / 2) ** 2 * amp[k], 0)
    cenv = np.where(inside & (u < cf) & (cf > 0), np.sin(np.pi * u / np.maximum(cf, 1e-3)) ** 2, 0) * cons_amp[k]

    # F0 contour (frames), then per-sample with jitter and tremor
    kf, uf, _ = syllable_at(tf)
    x = np.clip((tf - onsets[0]) / max(end - onsets[0], 1e-3), 0, 1)
    rng_st = float(p["range_st"]) * spk.range_f
    tone_curve = np.select([tones[kf] == i for i in range(4)], [f(np.clip(uf, 0, 1)) for f in _TONES])
    st = float(p["f0_st"]) + rng_st * _contour(str(p["contour"]), x) + 0.35 * rng_st * tone_curve
    st += _smooth(r.normal(0, 0.6, n_frames), 25)
    st += float(p["tremor_st"]) * np.sin(2 * np.pi * r.uniform(5, 7) * tf + r.uniform(0, 2 * np.pi))
    st = _smooth(st, 5)
    jit = spk.jitter + float(p["jitter"])
    f0 = spk.f0 * 2 ** (st / 12) * (1 + jit * r.standard_normal(n_frames))
    f0_s = np.interp(t, tf, f0)

    # glottal source: Rosenberg pulse per period, differentiated (lip radiation), with shimmer
    phase = np.cumsum(f0_s / SR)
    ph = phase % 1.0
    oq = float(p["open_q"])
    a, b = 0.6 * oq, 0.4 * oq
    g = np.where(ph < a, 0.5 * (1 - np.cos(np.pi * ph / a)),
                 np.where(ph < a + b, np.cos(np.pi * (ph - a) / (2 * b)), 0.0))
    dg = np.diff(g, prepend=0.0)
    period = phase.astype(np.int64)
    dg *= 1 + 2 * jit * r.standard_normal(period[-1] + 1)[period]
    dg /= np.sqrt(np.mean(dg ** 2)) + 1e-12
    breath = float(np.clip(spk.breath + float(p["breath"]), 0, 0.6))
    aspiration = r.standard_normal(n) * (0.3 + g)
    source = venv * ((1 - breath) * dg + 1.6 * breath * aspiration)

    # vocal tract: cascade of 5 resonators moving between vowel targets, spectral tilt, microphone
    formants = VOWELS[vowels[kf]] * spk.vtl
    formants[:, 0] *= 1 + float(p["f1_shift"])
    formants[:, 1] *= 1 + float(p["f2_shift"])
    formants = _smooth(formants, 6)
    formants = np.concatenate([formants, np.full((n_frames, 1), F5 * spk.vtl)], axis=1)
    freqs = np.fft.rfftfreq(NFFT, 1 / SR)
    # squared magnitude in real float32 arithmetic: 4x faster than complex128, far below PCM16 precision
    w = 2 * np.pi * freqs / SR
    cos1, sin1, cos2, sin2 = (v.astype(np.float32) for v in (np.cos(w), np.sin(w), np.cos(2 * w), np.sin(2 * w)))
    env2 = np.ones((n_frames, len(freqs)), np.float32)
    for j in range(formants.shape[1]):
        rr = np.float32(np.exp(-np.pi * BANDWIDTHS[j] * (1 + 1.5 * breath) / SR))
        c = (2 * rr * np.cos(2 * np.pi * np.minimum(formants[:, j:j + 1], 0.45 * SR) / SR)).astype(np.float32)
        # unit gain at DC: |1 - c + r^2| / |1 - c e^-jw + r^2 e^-2jw|
        re_, im_ = 1 - c * cos1 + rr * rr * cos2, c * sin1 - rr * rr * sin2
        env2 *= np.square(1 - c + rr * rr) / (re_ * re_ + im_ * im_)
    env = np.sqrt(env2).astype(np.float64)
    tilt = spk.tilt_db + float(p["tilt_db"])
    octaves = np.log2(np.maximum(freqs, 125) / 500)
    env *= 10 ** ((tilt * octaves + spk.mic_db) / 20)
    y = _stft_filter(source, env)

    # consonants: noise through a fricative resonance (post-alveolar ~3 kHz or alveolar ~6 kHz)
    noise = r.standard_normal(n) * cenv
    for hi, fc in ((False, 3000.0), (True, 6000.0)):
        sel = np.where(fric_hi[k] == hi, noise, 0.0)
        rr = np.exp(-np.pi * 1500 / SR)
        y += 0.5 * signal.lfilter([1 - rr], [1, -2 * rr * np.cos(2 * np.pi * fc * spk.vtl ** 0.5 / SR), rr * rr], sel)

    # level: the voiced part at the target loudness; a steady recording noise floor; no clipping
    voiced = venv > 0.3 * venv.max()
    level_db = -26 + spk.level_db + float(p["energy_db"])
    y *= 10 ** (level_db / 20) / (np.sqrt(np.mean(y[voiced] ** 2)) + 1e-12)
    floor = signal.lfilter([1.0], [1.0, -0.9], r.standard_normal(n))
    y += floor * 10 ** (spk.floor_db / 20) / np.sqrt(np.mean(floor ** 2))
    peak = np.max(np.abs(y))
    if peak > 0.9:
        y = 0.9 * np.tanh(y / 0.9)
    return y, float(onsets[0]), end


def _ratio(rate: int) -> tuple[int, int]:
    g = math.gcd(rate, SR)
    return rate // g, SR // g


@functools.lru_cache(maxsize=4)
def _resample_filter(rate: int) -> np.ndarray:
    """resample_poly's own default anti-imaging filter, designed once instead of per file."""
    up, down = _ratio(rate)
    max_rate = max(up, down)
    half_len = 10 * max_rate
    return signal.firwin(2 * half_len + 1, 1.0 / max_rate, window=("kaiser", 5.0))


def to_wav_bytes(y: np.ndarray, utt: Utterance, seed: int) -> bytes:
    """The release's audio file: 44.1 kHz (upsampled) or 16 kHz, mono or stereo, PCM16."""
    r = _rng(seed, 5, utt.group, utt.dialogue, utt.turn)
    if utt.sample_rate != SR:
        up, down = _ratio(utt.sample_rate)
        y = signal.resample_poly(y, up, down, window=_resample_filter(utt.sample_rate))
    if utt.channels == 2:   # a second microphone: other gain, its own noise
        y2 = y * r.uniform(0.7, 1.0) + r.normal(0, 10 ** (-70 / 20), len(y))
        y = np.stack([y, y2], axis=1)
    pcm = np.clip(np.round(y * 32767), -32768, 32767).astype(np.int16)
    buf = io.BytesIO()
    sf.write(buf, pcm, utt.sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


# ---------------------------------------------------------------- video

def render_frames(utt: Utterance, spk: Speaker, seed: int, y: np.ndarray) -> np.ndarray:
    """(frames, VIDEO_SIZE, VIDEO_SIZE, 3) uint8 RGB of the speaker's face with the VIDEO label's expression.

    The mouth also opens with the loudness of the speech in each frame, the head drifts a little, the eyes
    blink, and each frame gets sensor noise.
    """
    import cv2

    r = _rng(seed, 7, utt.group, utt.dialogue, utt.turn)
    n = max(1, int(round(len(y) / SR * FPS)))
    neutral = np.array(EXPRESSIONS["neutral"])
    k = r.uniform(0.85, 1.3) if utt.labels["video"] != "neutral" else 0.0
    smile, opening, tilt, raise_, eye = neutral + k * (np.array(EXPRESSIONS[utt.labels["video"]]) - neutral)
    hop = SR // FPS
    rms = np.array([np.sqrt(np.mean(y[i * hop:(i + 1) * hop] ** 2)) if i * hop < len(y) else 0.0
                    for i in range(n)])
    talk = np.clip(rms / (rms.max() + 1e-9), 0, 1) * (rms > 0.1 * rms.max())
    drift = np.cumsum(r.normal(0, 0.6, (n, 2)), axis=0)
    drift = np.clip(drift - drift.mean(axis=0), -2, 2)
    blink = r.random(n) < 0.06
    S = 4                                             # sub-pixel precision of the cv2 drawing calls
    frames = np.empty((n, VIDEO_SIZE, VIDEO_SIZE, 3), np.uint8)
    for i in range(n):
        img = np.empty((VIDEO_SIZE, VIDEO_SIZE, 3), np.uint8)
        img[:] = spk.background
        cx, cy = spk.cx + drift[i, 0], spk.cy + drift[i, 1]
        fw, fh = spk.face_w, spk.face_h

        def pt(x, yy):
            return int(round(x * (1 << S))), int(round(yy * (1 << S)))

        def ax(a, b):
            return max(1, int(round(a * (1 << S)))), max(1, int(round(b * (1 << S))))

        cv2.ellipse(img, pt(cx, cy - 0.25 * fh), ax(fw * 1.08, fh * 0.95), 0, 180, 360, spk.hair, -1,
                    cv2.LINE_AA, S)
        cv2.ellipse(img, pt(cx, cy), ax(fw, fh), 0, 0, 360, spk.skin, -1, cv2.LINE_AA, S)
        eye_h = 0.1 * fh * eye * (0.15 if blink[i] else 1.0)
        for side in (-1, 1):
            ex, ey = cx + side * 0.4 * fw, cy - 0.12 * fh
            cv2.ellipse(img, pt(ex, ey), ax(0.2 * fw, eye_h), 0, 0, 360, (245, 245, 240), -1, cv2.LINE_AA, S)
            if not blink[i]:
                cv2.circle(img, pt(ex, ey), int(min(0.09 * fw, eye_h) * (1 << S)), (30, 25, 20), -1,
                           cv2.LINE_AA, S)
            by = ey - 0.16 * fh - raise_ * 0.09 * fh
            inner = pt(cx + side * 0.15 * fw, by - tilt * 0.07 * fh)
            outer = pt(cx + side * 0.62 * fw, by + tilt * 0.05 * fh)
            cv2.line(img, inner, outer, spk.hair, 3, cv2.LINE_AA, S)
        # mouth: upper and lower lip curves; corners up when smiling, open with the expression and the speech
        u = np.linspace(-1, 1, 15)
        mx, my, mw = cx, cy + 0.5 * fh, 0.42 * fw
        curve = smile * 0.11 * fh * (1 - u ** 2)
        gap = (opening * 0.22 + 0.12 * talk[i]) * fh * (1 - u ** 2) + 0.5
        upper = np.stack([mx + u * mw, my + curve - 0.3 * gap], axis=1)
        lower = np.stack([mx + u * mw, my + curve + 0.7 * gap], axis=1)
        poly = (np.concatenate([upper, lower[::-1]]) * (1 << S)).round().astype(np.int32)
        cv2.fillPoly(img, [poly], (120, 30, 40), cv2.LINE_AA, S)
        noise = r.normal(0, 3.0, img.shape)
        frames[i] = np.clip(img + noise, 0, 255).astype(np.uint8)
    return frames


def to_mp4_bytes(frames: np.ndarray, y: np.ndarray) -> bytes:
    """The release's video file: H.264 (yuv420p, FPS) with the 16 kHz speech as a mono AAC track."""
    import av
    import cv2

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        vs = c.add_stream("libx264", rate=FPS, options={"crf": "26", "preset": "veryfast"})
        vs.width = vs.height = VIDEO_SIZE
        vs.pix_fmt = "yuv420p"
        vs.codec_context.thread_count = 1     # x264's output then does not depend on the number of cores
        aus = c.add_stream("aac", rate=SR)
        aus.layout = "mono"
        aus.bit_rate = 32000
        for i, f in enumerate(frames):
            # converted by OpenCV: PyAV's own rgb24 -> yuv420p conversion gave different bytes from run to run
            frame = av.VideoFrame.from_ndarray(cv2.cvtColor(f, cv2.COLOR_RGB2YUV_I420), format="yuv420p")
            frame.pts = i
            c.mux(vs.encode(frame))
        c.mux(vs.encode())
        frame = av.AudioFrame.from_ndarray(y[None].astype(np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = SR, 0
        c.mux(aus.encode(frame))
        c.mux(aus.encode())
    return buf.getvalue()


# ---------------------------------------------------------------- JSON of each modality

def _annotators(r: np.random.Generator, label: str, n: int) -> list[str]:
    """n annotator labels whose majority is ``label``."""
    votes = [label] * (n // 2 + 1)
    votes += [_other_label(r, label, 0.5) for _ in range(n - len(votes))]
    return [votes[i] for i in r.permutation(n)]


# Caption templates per kind: several wordings, so that captions are not constant strings. The wording is
# chosen by what is heard (as an annotator's phrasing follows the impression), never at random: a random
# choice that no audio reveals would cap every system at one reference and favour copying a whole caption.
# The overall caption summarises the other three; it does not quote the transcript (that would be ASR).
CAPTION_TEMPLATES = {
    "speaker": ("{sex}性，{age}，音调{pitch}", "一位{age}{sex}性，声音{pitch_adj}", "{age}{sex}声，音高{pitch}",
                "说话人是{age}{sex}性，嗓音{pitch_adj}"),
    "style": ("语速{rate}，音量{vol}", "说话{rate_adv}，声音{vol_adj}", "{rate_adv}地说，音量{vol}",
              "语速{rate}，{vol_adj}的声音"),
    "emotion": ("{emo}", "语气{emo}", "带着{emo}的情绪", "听起来很{emo}"),
    "overall": ("一位{age}{sex}性以{rate}的语速、{vol}的音量，带着{emo}的情绪说话",
                "{age}{sex}性{rate_adv}地说着，声音{vol_adj}，语气{emo}",
                "一个声音{pitch_adj}的{age}{sex}性{rate_adv}地说话，听起来很{emo}"),
}


def _caption(utt: Utterance, spk: Speaker) -> dict[str, str]:
    """The Audio JSON ``sourceAttr``: speaker, style, emotion and overall captions from the synthesis."""
    p = utt.prosody
    pitch = spk.f0 * 2 ** (float(p["f0_st"]) / 12) / (210 if spk.female else 120)
    level = 2 if pitch > 1.15 else 0 if pitch < 0.9 else 1
    rate = float(p["rate"]) * spk.rate
    speed = 2 if rate > 5.2 else 0 if rate < 4.0 else 1
    energy = float(p["energy_db"])
    loud = 2 if energy > 3 else 0 if energy < -3 else 1
    emo = EMOTIONS_ALL.index(utt.emotion)
    words = {
        "sex": "女" if spk.female else "男", "age": spk.age, "emo": EMOTION_ZH[utt.emotion],
        "pitch": ("偏低", "适中", "偏高")[level], "pitch_adj": ("低沉", "平和", "尖细")[level],
        "rate": ("较慢", "适中", "较快")[speed], "rate_adv": ("慢慢", "平稳", "飞快")[speed],
        "vol": ("较小", "适中", "较大")[loud], "vol_adj": ("轻柔", "平稳", "响亮")[loud],
    }
    # which wording: a function of the attributes each kind describes
    pick = {"speaker": 2 * spk.female + (level == 1), "style": 3 * speed + loud, "emotion": emo + loud,
            "overall": emo + 2 * speed + spk.female}
    return {kind: templates[pick[kind] % len(templates)].format(**words)
            for kind, templates in CAPTION_TEMPLATES.items()}


def _plain(content: str) -> str:
    """The transcript with markup removed (for captions and paragraphs only)."""
    return re.sub(r"\[[^\]]*\]+|【[^】]*】", "", content)


def modality_json(utt: Utterance, spk: Speaker, seed: int, start: float, end: float) -> dict[str, bytes]:
    """The four JSON files of one utterance, encoded (BOM where the quirk says so)."""
    r = _rng(seed, 6, utt.group, utt.dialogue, utt.turn)
    rel = f"{utt.rel_dir}/{utt.uid}"
    sid: int | str = int(utt.speaker) if utt.quirks["int_speaker_id"] else utt.speaker
    plain = _plain(utt.content)
    n_ann = int(r.integers(3, 6))
    docs: dict[str, dict] = {}

    audio = {"file_name" if utt.quirks["audio_file_name"] else "file_path": f"{rel}.wav",
             "speaker_id": sid, "content": utt.content, "emotion_result": utt.labels["audio"],
             "data": [{"annotator": f"A{i + 1:02d}", "emotion": e}
                      for i, e in enumerate(_annotators(r, utt.labels["audio"], n_ann))],
             "paragraphs": [{"bg": int(round(start * 1000)), "ed": int(round(end * 1000)), "text": plain}]}
    if not utt.quirks["no_caption"]:
        audio["sourceAttr"] = _caption(utt, spk)
    docs["Audio"] = audio
    docs["Text"] = {"file_name": rel, "speaker_id": sid, "content": utt.content,
                    "emotion_result": utt.labels["text"],
                    "data": {f"A{i + 1:02d}": e for i, e in enumerate(_annotators(r, utt.labels["text"], n_ann))}}
    docs["Video"] = {"file_name": f"{rel}.mp4", "speaker_id": sid, "emotion_result": utt.labels["video"],
                     "data": [{"annotator": f"A{i + 1:02d}", "emotion": e}
                              for i, e in enumerate(_annotators(r, utt.labels["video"], n_ann))]}
    votes = _annotators(r, utt.labels["multi"], n_ann)
    scores = np.clip(utt.sentiment + 0.2 * r.integers(-2, 3, n_ann), -2, 2)
    docs["Multimodal"] = {"file_name": f"{rel}.mp4", "speaker_id": sid, "emotion_result": utt.labels["multi"],
                          "Continuous label_result": utt.sentiment,
                          "data": [{"annotator": f"A{i + 1:02d}", "emotion": e, "sentiment": round(float(v), 1)}
                                   for i, (e, v) in enumerate(zip(votes, scores))]}
    out = {}
    for modality, doc in docs.items():
        text = json.dumps(doc, ensure_ascii=False, indent=2 if modality == "Audio" else None)
        out[modality] = ("\ufeff" if utt.quirks["bom"] else "").encode() + text.encode("utf-8")
    return out


# ---------------------------------------------------------------- the release writer

# modality -> (folder under the corpus root, media subfolder and extension); Audio and Multimodal are
# nested one level deeper, as when a tar holding ``Audio/`` is extracted into ``Audio/``.
MODALITY_ROOTS = {"Audio": ("Audio/Audio", "wav", ".wav"), "Text": ("Text", None, None),
                  "Video": ("Video", None, None), "Multimodal": ("Multimodal/Multimodal", "mp4", ".mp4")}


class _TreeWriter:
    """Writes files under a root and keeps a hash of the whole tree (relative path + content)."""

    def __init__(self, root: Path):
        self.root = root
        self.hashes: dict[str, str] = {}
        self.bytes = 0
        self.made: set[Path] = set()

    def write(self, rel: str, data: bytes) -> None:
        path = self.root / rel
        if path.parent not in self.made:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.made.add(path.parent)
        path.write_bytes(data)
        self.hashes[rel] = hashlib.sha256(data).hexdigest()
        self.bytes += len(data)

    def tree_hash(self) -> str:
        return tree_hash_of(self.hashes)


def tree_hash_of(file_hashes: dict[str, str]) -> str:
    h = hashlib.sha256()
    for rel in sorted(file_hashes):
        h.update(f"{rel}\t{file_hashes[rel]}\n".encode())
    return h.hexdigest()


def hash_tree(root: str | os.PathLike) -> str:
    """Hash of every file under root except the marker, from disk (to check a corpus)."""
    root = Path(root)
    hashes = {}
    for path in root.rglob("*"):
        if path.is_file() and path.name != MARKER:
            hashes[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return tree_hash_of(hashes)


def write_release(out: str | os.PathLike, seed: int = 0, scale: float = 1.0, progress: bool = True) -> dict:
    """Write the whole release into ``out`` (made if needed) and its marker; returns the marker dict."""
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tw = _TreeWriter(out)
    speakers = make_speakers(seed)
    utts = plan_corpus(seed, scale)
    seconds = 0.0
    for utt in tqdm(utts, desc="mini corpus", unit="utt", file=sys.stderr, mininterval=1.0,
                    disable=None if progress else True):  # None: no bar when stderr is no terminal
        spk = speakers[utt.speaker]
        y, start, end = synthesize(utt, spk, seed)
        seconds += len(y) / SR
        docs = modality_json(utt, spk, seed, start, end)
        for modality, (root, media, ext) in MODALITY_ROOTS.items():
            tw.write(f"{root}/json/{utt.rel_dir}/{utt.uid}.json", docs[modality])
            if media == "wav":
                tw.write(f"{root}/wav/{utt.rel_dir}/{utt.uid}.wav", to_wav_bytes(y, utt, seed))
            elif media == "mp4":
                tw.write(f"{root}/mp4/{utt.rel_dir}/{utt.uid}.mp4",
                         to_mp4_bytes(render_frames(utt, spk, seed, y), y))
        if utt.quirks["appledouble"]:
            tw.write(f"Audio/Audio/json/{utt.rel_dir}/._{utt.uid}.json", APPLEDOUBLE)
            tw.write(f"Audio/Audio/wav/{utt.rel_dir}/._{utt.uid}.wav", APPLEDOUBLE)
            tw.write(f"Text/json/{utt.rel_dir}/._{utt.uid}.json", APPLEDOUBLE)
    # folder-level debris, as a Mac leaves beside folders
    tw.write("._Audio", APPLEDOUBLE)
    tw.write("Video/json/._G00007", APPLEDOUBLE)
    marker = {
        "generator": "etser.minicorpus", "version": VERSION, "seed": seed, "scale": scale,
        "utterances": len(utts), "files": len(tw.hashes), "bytes": tw.bytes,
        "audio_hours": round(seconds / 3600, 4), "tree_sha256": tw.tree_hash(),
    }
    (out / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    return marker


def read_marker(out: str | os.PathLike) -> dict | None:
    try:
        return json.loads((Path(out) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_complete(out: str | os.PathLike, seed: int, scale: float) -> bool:
    """True when ``out`` holds a finished corpus of this version and these parameters (file count checked)."""
    m = read_marker(out)
    if not m or (m.get("version"), m.get("seed"), m.get("scale")) != (VERSION, seed, scale):
        return False
    count = sum(len(files) for _, _, files in os.walk(out)) - 1
    return count == m.get("files")


def make_mini_corpus(out: str | os.PathLike, seed: int = 0, scale: float = 1.0, progress: bool = True) -> dict:
    """Generate the corpus into ``out`` unless it is already there; atomic (temporary folder, rename).

    Refuses to replace a non-empty ``out`` that is not a mini corpus (no marker).
    """
    out = Path(out)
    if not 0 < scale <= 20:
        raise ValueError(f"scale must be in (0, 20], got {scale}")
    if is_complete(out, seed, scale):
        marker = read_marker(out)
        print(f"mini corpus: {out} is complete (seed {seed}, scale {scale}, version {VERSION}, "
              f"{marker['utterances']} utterances); nothing to do", file=sys.stderr)
        return marker
    if out.exists() and any(out.iterdir()) and read_marker(out) is None:
        raise FileExistsError(f"{out} exists and is not a mini corpus (no {MARKER}); "
                              "remove it or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.time()
    try:
        marker = write_release(tmp, seed, scale, progress)
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.rename(out, old)
        os.rename(tmp, out)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    dt = time.time() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"mini corpus: {marker['utterances']} utterances, {marker['files']} files, "
          f"{marker['audio_hours'] * 60:.1f} min audio, {marker['bytes'] / 1e6:.0f} MB in {dt:.1f} s "
          f"({marker['utterances'] / dt:.0f} utt/s), peak memory {peak_mb:.0f} MB -> {out}", file=sys.stderr)
    return marker
