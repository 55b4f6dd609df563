"""The embedded mini corpus: determinism, the release layout and quirks, labels, and learnability."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emotiontalk import minicorpus
from emotiontalk.minicorpus import MARKER, hash_tree, make_mini_corpus, read_marker
from emotiontalk.labels import EMOTIONS_ALL, EMOTIONS_FOUR

ROOT = Path(__file__).resolve().parents[1]
STEM = re.compile(r"G(\d{5})_(\d{2})_(\d{2})_(\d{3})")
# the official speakers per split (emotiontalk-meta/README.md)
SPLIT_SPEAKERS = {"train": {f"{s:02d}" for s in (*range(5, 13), 14, 16, 17, 18, 19)},
                  "val": {"01", "02", "13", "15"}, "test": {"02", "13", "20", "21"}}
JSON_DIRS = {"Audio": "Audio/Audio/json", "Text": "Text/json", "Video": "Video/json",
             "Multimodal": "Multimodal/Multimodal/json"}


def split_of(group: int) -> str:
    return {1: "val", 12: "val", 3: "test", 15: "test"}.get(group, "train")


def load_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8-sig"))


@pytest.fixture(scope="module")
def docs(mini_release):
    """modality -> uid -> (parsed JSON, raw bytes)."""
    out = {}
    for modality, rel in JSON_DIRS.items():
        out[modality] = {p.stem: (load_json(p), p.read_bytes())
                         for p in (mini_release / rel).rglob("G*.json")}
    return out


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = make_mini_corpus(tmp_path / "a", seed=3, scale=0.05, progress=False)
    b = make_mini_corpus(tmp_path / "b", seed=3, scale=0.05, progress=False)
    assert hash_tree(tmp_path / "a") == hash_tree(tmp_path / "b") == a["tree_sha256"] == b["tree_sha256"]
    assert a["utterances"] == 30
    c = make_mini_corpus(tmp_path / "c", seed=4, scale=0.05, progress=False)
    assert c["tree_sha256"] != a["tree_sha256"]


def test_marker_matches_files_on_disk(mini_release):
    marker = read_marker(mini_release)
    assert marker["utterances"] == 600 and marker["seed"] == 0 and marker["version"] == minicorpus.VERSION
    assert hash_tree(mini_release) == marker["tree_sha256"]
    assert 0.25 < marker["audio_hours"] < 0.45


def test_layout_groups_speakers_and_nesting(mini_release, docs):
    for modality, rel in JSON_DIRS.items():
        assert (mini_release / rel).is_dir(), rel
    assert (mini_release / "Audio/Audio/wav").is_dir() and (mini_release / "Multimodal/Multimodal/mp4").is_dir()
    assert not (mini_release / "Audio/json").exists()          # nested: found only one level deeper
    uids = set(docs["Audio"])
    assert len(uids) == 600
    for modality in JSON_DIRS:
        assert set(docs[modality]) == uids, modality
    speakers = {s: set() for s in SPLIT_SPEAKERS}
    groups = Counter()
    for path in mini_release.rglob("*"):
        if path.is_dir() or path.name == MARKER or path.name.startswith("._"):
            continue
        m = STEM.fullmatch(path.stem)
        assert m, path
        g, d, s, _ = m.groups()
        rel = path.relative_to(mini_release).as_posix()
        assert rel.endswith(f"/G{g}/G{g}_{d}/G{g}_{d}_{s}/{path.name}"), rel
        assert path.suffix in {".json", ".wav", ".mp4"}
        speakers[split_of(int(g))].add(s)
        if path.suffix == ".wav":
            groups[int(g)] += 1
            assert path.stem in uids
    assert sorted(groups) == list(range(1, 16)) and set(groups.values()) == {40}
    assert speakers == SPLIT_SPEAKERS
    assert speakers["val"] & speakers["test"] == {"02", "13"}
    for uid in uids:
        rel = "/".join([uid[:6], uid[:9], uid[:12], uid])
        assert (mini_release / "Audio/Audio/wav" / f"{rel}.wav").is_file()
        assert (mini_release / "Multimodal/Multimodal/mp4" / f"{rel}.mp4").is_file()


def test_quirks_present(mini_release, docs):
    debris = [p for p in mini_release.rglob("._*")]
    assert len(debris) >= 3 and all(p.read_bytes()[:4] == b"\x00\x05\x16\x07" for p in debris)
    boms = sum(raw.startswith(b"\xef\xbb\xbf") for d in docs.values() for _, raw in d.values())
    assert 0 < boms < 0.2 * 2400
    audio = [obj for obj, _ in docs["Audio"].values()]
    assert sum("file_path" in o for o in audio) > 400 and sum("file_name" in o for o in audio) > 20
    for modality in ("Text", "Video", "Multimodal"):
        assert all("file_name" in o and "file_path" not in o for o, _ in docs[modality].values())
    ids = [o["speaker_id"] for d in docs.values() for o, _ in d.values()]
    assert any(isinstance(i, int) for i in ids) and any(isinstance(i, str) and len(i) == 2 for i in ids)
    for uid, (obj, _) in docs["Audio"].items():
        assert int(obj["speaker_id"]) == int(uid[10:12])
        assert obj["paragraphs"] and obj["data"]
    captions = [o.get("sourceAttr") for o in audio]
    present = [c for c in captions if c]
    assert 0.75 * 600 < len(present) < 600
    assert all(set(c) == {"speaker", "style", "emotion", "overall"} and all(map(str, c.values())) for c in present)
    contents = " ".join(o["content"] for o in audio)
    for tag in ("[over/]", "[/over]", "【over/】", "【/over】", "[laughing]", "[interrupted]"):
        assert tag in contents, tag
    assert "[[/over]" in contents or "[/over/]" in contents
    assert all(o["content"] == docs["Text"][uid][0]["content"] for uid, (o, _) in docs["Audio"].items())


def test_audio_formats_and_durations(mini_release):
    infos = [sf.info(str(p)) for p in (mini_release / "Audio/Audio/wav").rglob("G*.wav")]
    assert len(infos) == 600
    rates = Counter(i.samplerate for i in infos)
    assert set(rates) == {44100, 16000} and rates[44100] > 0.6 * 600
    assert set(Counter(i.channels for i in infos)) == {1, 2}
    assert {i.subtype for i in infos} == {"PCM_16"} and {i.format for i in infos} == {"WAV"}
    durations = np.array([i.duration for i in infos])
    assert durations.min() >= 1.0 and durations.max() <= 3.01


def test_classes_per_split(docs):
    counts = {s: Counter() for s in SPLIT_SPEAKERS}
    for uid, (obj, _) in docs["Audio"].items():
        counts[split_of(int(uid[1:6]))][obj["emotion_result"]] += 1
    for split, c in counts.items():
        assert set(c) == set(EMOTIONS_ALL), split
        assert c.most_common(1)[0][0] == "neutral"
    for split in ("val", "test"):
        assert min(counts[split][e] for e in EMOTIONS_FOUR) >= 6
    for modality in JSON_DIRS:
        labels = {o["emotion_result"] for o, _ in docs[modality].values()}
        assert labels == set(EMOTIONS_ALL), modality


def test_label_agreement_and_sentiment(docs):
    multi = {uid: o["emotion_result"] for uid, (o, _) in docs["Multimodal"].items()}
    rates = {}
    # the real corpus's agreement with the multimodal label, within sampling noise of 600 draws
    for modality, target in (("Audio", 0.68), ("Video", 0.66), ("Text", 0.42)):
        other = {uid: o["emotion_result"] for uid, (o, _) in docs[modality].items()}
        rates[modality] = np.mean([multi[u] == other[u] for u in multi])
        assert abs(rates[modality] - target) <= 0.06, (modality, rates[modality])
    print("agreement with the multimodal label:", {k: round(float(v), 3) for k, v in rates.items()})
    for obj, _ in docs["Multimodal"].values():
        value = obj["Continuous label_result"]
        assert isinstance(value, float) and -2 <= value <= 2
        assert abs(value * 5 - round(value * 5)) < 1e-9          # steps of 0.2
        emo = obj["emotion_result"]
        if emo == "happy":
            assert value > 0
        if emo in ("sad", "angry", "disgusted", "fearful"):
            assert value < 0
    # annotator majorities give the label
    for modality in ("Audio", "Video", "Multimodal"):
        for obj, _ in docs[modality].values():
            votes = Counter(d["emotion"] for d in obj["data"])
            assert votes[obj["emotion_result"]] > len(obj["data"]) / 2


def _fbank_stats(paths: list[Path]) -> np.ndarray:
    """Per-utterance mean and std of 80 log-mel filterbanks (Kaldi fbank) on the 16 kHz mono signal."""
    import torch
    import torchaudio

    torch.set_num_threads(1)
    resamplers = {}                      # one per rate: building the kernel is the slow part
    feats = []
    for path in paths:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
        wave = torch.from_numpy(audio.mean(axis=1))[None]
        if rate != 16000:
            if rate not in resamplers:
                resamplers[rate] = torchaudio.transforms.Resample(rate, 16000)
            wave = resamplers[rate](wave)
        fb = torchaudio.compliance.kaldi.fbank(wave * 32768, num_mel_bins=80, sample_frequency=16000,
                                               dither=0.0).numpy()
        feats.append(np.concatenate([fb.mean(axis=0), fb.std(axis=0)]))
    return np.array(feats)


def _media(root: Path, folder: str, uid: str, ext: str) -> Path:
    return root / folder / uid[:6] / uid[:9] / uid[:12] / f"{uid}{ext}"


@pytest.fixture(scope="module")
def fbank(mini_release, docs) -> np.ndarray:
    """Fbank mean+std of every utterance, in sorted uid order."""
    return _fbank_stats([_media(mini_release, "Audio/Audio/wav", u, ".wav") for u in sorted(docs["Audio"])])


def test_plain_fbank_statistics_separate_the_emotions(docs, fbank):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.preprocessing import StandardScaler

    uids = sorted(docs["Audio"])
    x = fbank
    y = np.array([docs["Audio"][u][0]["emotion_result"] for u in uids])
    split = np.array([split_of(int(u[1:6])) for u in uids])
    ua = {}
    # mean+std without mean normalisation; std only (what is left after per-utterance mean normalisation)
    for feats, cols in (("mean+std", slice(None)), ("std", slice(80, None))):
        for classes in (EMOTIONS_FOUR, EMOTIONS_ALL):
            train = (split == "train") & np.isin(y, classes)
            test = (split == "test") & np.isin(y, classes)
            scaler = StandardScaler().fit(x[train][:, cols])
            clf = LogisticRegression(max_iter=3000).fit(scaler.transform(x[train][:, cols]), y[train])
            pred = clf.predict(scaler.transform(x[test][:, cols]))
            ua[feats, len(classes)] = balanced_accuracy_score(y[test], pred)
    print("test UA of logistic regression on fbank statistics:",
          {f"{f}/{n}": round(float(v), 3) for (f, n), v in ua.items()})
    assert ua["mean+std", 4] >= 0.6 and ua["std", 4] >= 0.6      # chance: 0.25
    assert ua["mean+std", 7] >= 0.4 and ua["std", 7] >= 0.4      # chance: 0.14


@pytest.fixture(scope="module")
def videos(mini_release, docs) -> dict:
    """Every mp4 decoded once: per uid its streams, durations and a 24x24 mean grey frame."""
    import av
    import cv2

    out = {}
    for uid in sorted(docs["Audio"]):
        with av.open(str(_media(mini_release, "Multimodal/Multimodal/mp4", uid, ".mp4"))) as c:
            v, a = c.streams.video[0], c.streams.audio[0]
            info = {"codecs": (v.codec_context.name, a.codec_context.name), "size": (v.width, v.height),
                    "video_s": float(v.duration * v.time_base), "audio_s": float(a.duration * a.time_base),
                    "audio_rate": a.rate}
            frames = np.stack([f.to_ndarray(format="gray") for f in c.decode(video=0)]).astype(np.float32)
        info["frames"] = len(frames)
        info["mean"] = cv2.resize(frames.mean(axis=0), (24, 24), interpolation=cv2.INTER_AREA).ravel()
        out[uid] = info
    return out


def test_every_mp4_decodes_with_the_wav_duration_and_an_audio_track(mini_release, videos):
    assert len(videos) == 600
    for uid, v in videos.items():
        wav = sf.info(str(_media(mini_release, "Audio/Audio/wav", uid, ".wav"))).duration
        assert v["codecs"] == ("h264", "aac") and v["size"] == (128, 128) and v["audio_rate"] == 16000, uid
        assert abs(v["video_s"] - wav) <= 0.2 and abs(v["audio_s"] - wav) <= 0.2, (uid, v, wav)
        assert v["frames"] == round(v["video_s"] * minicorpus.FPS), uid


def _split_arrays(docs, source: str):
    uids = sorted(docs["Audio"])
    y = np.array([docs[source][u][0]["emotion_result"] for u in uids])
    train = np.array([split_of(int(u[1:6])) == "train" for u in uids])
    return uids, y, train


def _pixel_model():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=0.1))


def _ngram_model():
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(TfidfVectorizer(analyzer="char", ngram_range=(1, 2)), LogisticRegression(max_iter=3000, C=10))


def _fbank_model():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))


def test_video_label_from_mean_frame_pixels(docs, videos):
    from sklearn.metrics import balanced_accuracy_score

    uids, y, train = _split_arrays(docs, "Video")
    x = np.array([videos[u]["mean"] for u in uids])
    ua = balanced_accuracy_score(y[~train], _pixel_model().fit(x[train], y[train]).predict(x[~train]))
    print(f"val+test UA of the video label from 24x24 mean-frame pixels: {ua:.3f}")
    assert ua >= 0.55           # chance: 0.14; measured 0.77


def test_text_label_from_character_ngrams(docs):
    from sklearn.metrics import balanced_accuracy_score

    uids, y, train = _split_arrays(docs, "Text")
    x = np.array([docs["Text"][u][0]["content"] for u in uids])
    ua = balanced_accuracy_score(y[~train], _ngram_model().fit(x[train], y[train]).predict(x[~train]))
    print(f"val+test UA of the text label from character 1-2-grams: {ua:.3f}")
    assert ua >= 0.6            # chance: 0.14; measured 0.82


def test_three_modalities_predict_the_multimodal_label_better_than_any_one(docs, videos, fbank):
    """Each modality's own-label classifier gives posteriors (out of fold on train); a second logistic
    regression maps the posteriors of one or all three modalities to the multimodal label."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, balanced_accuracy_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    uids, y_multi, train = _split_arrays(docs, "Multimodal")
    inputs = {"Audio": (_fbank_model, fbank), "Video": (_pixel_model, np.array([videos[u]["mean"] for u in uids])),
              "Text": (_ngram_model, np.array([docs["Text"][u][0]["content"] for u in uids]))}
    post_train, post_test = {}, {}
    for source, (model, x) in inputs.items():
        y = _split_arrays(docs, source)[1]
        folds = StratifiedKFold(5, shuffle=True, random_state=0)
        post_train[source] = np.log(cross_val_predict(model(), x[train], y[train], cv=folds,
                                                      method="predict_proba") + 1e-4)
        post_test[source] = np.log(model().fit(x[train], y[train]).predict_proba(x[~train]) + 1e-4)
    scores = {}
    for names in (("Audio",), ("Video",), ("Text",), ("Audio", "Video", "Text")):
        fuse = LogisticRegression(max_iter=3000).fit(np.hstack([post_train[n] for n in names]), y_multi[train])
        pred = fuse.predict(np.hstack([post_test[n] for n in names]))
        scores["+".join(names)] = (accuracy_score(y_multi[~train], pred), balanced_accuracy_score(y_multi[~train], pred))
    print("val+test (accuracy, UA) of the multimodal label:",
          {k: (round(a, 3), round(u, 3)) for k, (a, u) in scores.items()})
    fused = scores.pop("Audio+Video+Text")
    # measured: fused 0.606 / 0.617, best single modality 0.512 (accuracy, Audio) / 0.460 (UA, Video)
    assert fused[0] >= max(a for a, _ in scores.values()) + 0.05
    assert fused[1] >= max(u for _, u in scores.values()) + 0.05


def test_captions_follow_the_speaker_and_vary(docs):
    speakers = minicorpus.make_speakers(0)
    captions = {uid: o["sourceAttr"] for uid, (o, _) in docs["Audio"].items() if o.get("sourceAttr")}
    for kind, templates in minicorpus.CAPTION_TEMPLATES.items():
        # every caption is one of the kind's wordings; several wordings and many fillings occur
        shapes = [re.compile(re.sub(r"\\\{\w+\\\}", "(.+)", re.escape(t))) for t in templates]
        literal = [len(re.sub(r"\{\w+\}", "", t)) for t in templates]  # "{emo}" alone matches any caption
        used = {max((i for i, rx in enumerate(shapes) if rx.fullmatch(c[kind])), key=literal.__getitem__, default=None)
                for c in captions.values()}
        assert None not in used and len(used) >= 3, (kind, used)
        assert len({c[kind] for c in captions.values()}) >= 9, kind
    for uid, c in captions.items():
        female = speakers[uid[10:12]].female
        assert ("女" in c["speaker"]) == female and ("男" in c["speaker"]) != female, (uid, c)
        emo = minicorpus.EMOTION_ZH[docs["Audio"][uid][0]["emotion_result"]]
        assert emo in c["emotion"] and emo in c["overall"], (uid, c)


def test_transcripts_carry_the_text_label_words(docs):
    hits = Counter()
    for uid, (obj, _) in docs["Text"].items():
        label = obj["emotion_result"]
        if label in minicorpus.EMOTION_WORDS:
            hits[any(w in obj["content"] for w in minicorpus.EMOTION_WORDS[label])] += 1
    assert hits[True] >= 0.95 * sum(hits.values())


def test_cli_skips_a_complete_corpus_and_refuses_foreign_folders(tmp_path, capsys):
    script = ROOT / "local/make_mini_corpus.py"
    out = tmp_path / "mini"
    args = ["--out", str(out), "--scale", "0.05"]
    first = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, check=True)
    assert "30 utterances" in first.stderr and is_single_corpus(tmp_path)
    # the rest in-process (the script's main) to save interpreter start-ups
    sys.path.insert(0, str(script.parent))
    try:
        import make_mini_corpus as cli
    finally:
        sys.path.remove(str(script.parent))
    stamp = (out / MARKER).stat().st_mtime_ns
    assert cli.main(args) == 0
    assert "is complete" in capsys.readouterr().err and (out / MARKER).stat().st_mtime_ns == stamp
    # other parameters: regenerated in place
    assert cli.main(args + ["--seed", "1"]) == 0
    assert "is complete" not in capsys.readouterr().err
    assert read_marker(out)["seed"] == 1 and is_single_corpus(tmp_path)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine\n")
    assert cli.main(["--out", str(foreign)]) == 1
    assert "is not a mini corpus" in capsys.readouterr().err
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


def is_single_corpus(parent: Path) -> bool:
    """No temporary or old folder left beside the corpus."""
    return not [p for p in parent.iterdir() if p.name.startswith(".")]


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) > 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    real = minicorpus.synthesize
    monkeypatch.setattr(minicorpus, "synthesize", failing)
    with pytest.raises(KeyboardInterrupt):
        make_mini_corpus(tmp_path / "mini", scale=0.05, progress=False)
    assert list(tmp_path.iterdir()) == []
    # an interrupted regeneration (other seed) keeps the complete corpus that was there
    monkeypatch.setattr(minicorpus, "synthesize", real)
    old = make_mini_corpus(tmp_path / "mini", seed=0, scale=0.05, progress=False)
    monkeypatch.setattr(minicorpus, "synthesize", failing)
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        make_mini_corpus(tmp_path / "mini", seed=1, scale=0.05, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["mini"]
    assert minicorpus.is_complete(tmp_path / "mini", 0, 0.05) and read_marker(tmp_path / "mini") == old


def test_stage1_reads_the_mini_corpus_strictly(mini_release, tmp_path):
    """The consumer's view: every utterance is kept, none excluded (no broken files in the corpus)."""
    from emotiontalk.release import prepare

    from etser.datadir import read_table

    result = prepare(mini_release, tmp_path / "data", strict=True, progress=False, echo=False)
    assert {s: len(u) for s, u in result.sets.items()} == {"train": 440, "val": 80, "test": 80}
    assert not result.exclusions
    assert "Every modality is present: no task is ruled out." in result.stats
    for s in ("train", "val", "test"):
        d = tmp_path / "data" / s
        video, wav = read_table(d / "video.scp"), read_table(d / "wav.scp")
        assert list(video) == list(wav) and all(Path(p).is_file() and p.endswith(".mp4") for p in video.values())
        for kind in ("speaker", "style", "emotion", "overall"):
            table = read_table(d / f"utt2caption_{kind}")
            assert 0.75 * len(wav) < len(table) < len(wav) and set(table) < set(wav)
