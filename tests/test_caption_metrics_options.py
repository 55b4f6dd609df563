"""The caption metric options the paper leaves unstated: tokenization, references per utterance and the
CLAPScore variant; the multi-reference file of a data dir; the settings printed under the caption table."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from etser.caption.metrics import load_metrics_config, score_captions
from tests.helpers_caption import tiny_clap_dir

ROOT = Path(__file__).resolve().parents[1]
# a hypothesis that is a contiguous part of its reference: every n-gram matches, BLEU-4 = the brevity penalty
HYP, REF = "男性大声地说话。", "一位男性大声地说话。"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _conf(**kw):
    conf = load_metrics_config(None)
    conf.update({"metrics": ["bleu4", "rouge_l", "cider_d"]}, **kw)
    return conf


def test_bleu4_by_characters_and_by_jieba_words_by_hand():
    # characters: 7 of 9; jieba: 男性 大声 地 说话 (4) of 一位 男性 大声 地 说话 (5)
    char = score_captions([HYP], [[REF]], _conf(tokenization="char"))
    jieba = score_captions([HYP], [[REF]], _conf(tokenization="jieba"))
    assert char["notes"]["segmentation"] == "char" and jieba["notes"]["segmentation"] == "jieba"
    assert char["scores"]["bleu4"] == pytest.approx(math.exp(1 - 9 / 7), abs=1e-6)
    assert jieba["scores"]["bleu4"] == pytest.approx(math.exp(1 - 5 / 4), abs=1e-6)
    # auto on Chinese is characters (the default: today's figures)
    auto = score_captions([HYP], [[REF]], _conf())
    assert auto["notes"]["segmentation"] == "char" and auto["notes"]["tokenization"] == "auto"
    assert auto["scores"] == char["scores"]


def test_whitespace_and_ptb_keep_unsegmented_chinese_whole(tmp_path):
    # one token each, and they differ: no n-gram matches
    ws = score_captions([HYP], [[REF]], _conf(tokenization="whitespace"))
    assert ws["notes"]["segmentation"] == "whitespace" and ws["scores"]["bleu1"] < 1e-6
    # pre-segmented text under whitespace scores as jieba does on the raw text
    seg = score_captions(["男性 大声 地 说话 。"], [["一位 男性 大声 地 说话"]], _conf(tokenization="whitespace"))
    assert seg["scores"]["bleu4"] == pytest.approx(math.exp(1 - 5 / 4), abs=1e-6)
    if shutil.which("java"):
        # PTB (aac-metrics' default) keeps the full-width 。 as a token: 2 tokens each, only 。 matches
        ptb = score_captions([HYP], [[REF]], _conf(tokenization="ptb"))
        assert ptb["notes"]["segmentation"] == "ptb" and ptb["scores"]["bleu1"] == pytest.approx(0.5, abs=1e-6)
    msgs = []
    nojava = score_captions([HYP], [[REF]], _conf(tokenization="ptb", java=str(tmp_path / "nojava")),
                            log=msgs.append)
    assert nojava["notes"]["segmentation"] == "whitespace" and any("PTB" in m for m in msgs)


def test_references_one_or_all_on_a_multi_reference_example():
    hyps = ["a man speaks loudly today", "a woman speaks slowly"]
    refs = [["the cat sat on a mat", "a man speaks loudly today"], ["a woman speaks slowly"]]
    one = score_captions(hyps, refs, _conf(references=1))
    two = score_captions(hyps, refs, _conf(references=2))
    everything = score_captions(hyps, refs, _conf())
    assert one["per_utt"]["bleu4"][0] < 0.01 and everything["per_utt"]["bleu4"][0] == pytest.approx(1.0, abs=1e-6)
    assert two["scores"] == everything["scores"]
    assert one["notes"]["references"] == 1 and one["notes"]["references_per_utt"] == [1, 1]
    assert everything["notes"]["references"] == "all" and everything["notes"]["references_per_utt"] == [1, 2]
    assert everything["notes"]["references_mean"] == pytest.approx(1.5)


def _write_yaml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("text, named", [("segment_zh: jieba\n", "tokenization: jieba"),
                                         ("ptb_tokenizer: false\n", "tokenization: char"),
                                         ("tokenization: words\n", "char, jieba, ptb, whitespace"),
                                         ("references: 0\n", "'all' or a number"),
                                         ("clap: {variant: audio}\n", "audio-text, text-text")])
def test_old_and_bad_options_are_refused_naming_the_new_ones(tmp_path, text, named):
    with pytest.raises(ValueError, match="metrics.yaml") as e:
        load_metrics_config(_write_yaml(tmp_path / "metrics.yaml", text))
    assert named in str(e.value)
    if text.startswith("segment_zh"):
        with pytest.raises(ValueError, match="tokenization"):  # a dict built in code as well
            score_captions(["a"], [["a"]], {**_conf(), "segment_zh": "jieba"})


def test_committed_config_is_todays_default():
    conf = load_metrics_config(ROOT / "conf" / "caption" / "metrics.yaml")
    assert conf["tokenization"] == "auto" and conf["references"] == "all"
    assert conf["clap"]["variant"] == "audio-text"


def _clap(tmp_path):
    d = tiny_clap_dir(tmp_path / "clap")
    from transformers import ClapModel, ClapProcessor
    return d, ClapModel.from_pretrained(str(d)).eval(), ClapProcessor.from_pretrained(str(d))


def test_clapscore_text_text_is_the_mean_cosine_to_the_references(tmp_path):
    import torch
    d, model, proc = _clap(tmp_path)
    conf = _conf(metrics=["clapscore"])
    conf["clap"].update(model_dir=str(d), variant="text-text")
    hyps = ["a high voice", "a low voice"]
    refs = [["a high voice"], ["the voice is low", "a slow speaker"]]
    res = score_captions(hyps, refs, conf)  # no audio needed
    assert res["notes"]["clapscore_variant"] == "text-text"
    per = res["per_utt"]["clapscore"]
    assert per[0] == pytest.approx(1.0, abs=1e-5)  # the caption is its reference
    with torch.no_grad():
        e = model.get_text_features(**proc.tokenizer(["a low voice", *refs[1]], return_tensors="pt", padding=True))
    e = getattr(e, "pooler_output", e)
    want = torch.nn.functional.cosine_similarity(e[:1], e[1:], dim=-1).mean().item()
    assert per[1] == pytest.approx(want, abs=1e-5)
    assert res["scores"]["clapscore"] == pytest.approx(np.mean(per))
    # references: 1 -> only the first reference counts
    conf["references"] = 1
    assert score_captions(hyps, refs, conf)["per_utt"]["clapscore"][1] != pytest.approx(per[1], abs=1e-6)


def test_clapscore_audio_text_uses_the_audio_not_the_references(tmp_path):
    import soundfile as sf
    d, _, _ = _clap(tmp_path)
    rng = np.random.default_rng(0)
    wavs = []
    for i in range(2):
        p = tmp_path / f"u{i}.wav"
        sf.write(p, (0.1 * rng.normal(size=8000 + 3000 * i)).astype(np.float32), 16000)
        wavs.append(str(p))
    conf = _conf(metrics=["clapscore"])
    conf["clap"]["model_dir"] = str(d)
    hyps = ["a high voice", "a low voice"]
    a = score_captions(hyps, [["x"], ["y"]], conf, wavs=wavs)
    b = score_captions(hyps, [["a high voice"], ["z"]], conf, wavs=wavs)
    assert a["notes"]["clapscore_variant"] == "audio-text"
    assert a["per_utt"]["clapscore"] == pytest.approx(b["per_utt"]["clapscore"], abs=1e-6)
    no_audio = score_captions(hyps, [["x"], ["y"]], conf)
    assert no_audio["scores"]["clapscore"] is None and "text-text" in no_audio["notes"]["clapscore"]


# ---------------------------------------------------------------- data dir and table

def _data(tmp_path: Path, refs_file: dict | None) -> Path:
    data = tmp_path / "data"
    tables = {"train": {"S01-a": "男性大声说话", "S01-b": "男性大声说话", "S01-c": "女性小声说话"},
              "test": {"S02-d": "一位男性大声说话", "S02-e": "女性小声说话"}}
    for s, t in tables.items():
        (data / s).mkdir(parents=True)
        (data / s / "utt2caption_style").write_text("".join(f"{u} {c}\n" for u, c in sorted(t.items())),
                                                    encoding="utf-8")
        (data / s / "utt2spk").write_text("".join(f"{u} {u[:3]}\n" for u in sorted(t)))
    if refs_file is not None:
        (data / "test" / "utt2captions_style").write_text(
            "".join(f"{u} {json.dumps(r, ensure_ascii=False)}\n" for u, r in sorted(refs_file.items())),
            encoding="utf-8")
    return data


def _score_frequent(tmp_path: Path, data: Path, name: str, **kw) -> dict:
    from etser.caption.score import score_baseline
    exp = tmp_path / "exp" / "caption" / "tag" / name / "style"
    m = score_baseline("frequent", "style", exp, ["test"], data, tmp_path / "dump", _conf(**kw))
    return m[0]


MULTI = {"S02-d": ["一位男性大声说话", "男性大声说话"], "S02-e": ["女性小声说话"]}


def test_scoring_reads_every_reference_of_the_data_dir(tmp_path):
    data = _data(tmp_path, MULTI)
    one = _score_frequent(tmp_path, data, "baseline_one", references=1)
    every = _score_frequent(tmp_path, data, "baseline_all")
    # the most frequent training caption 男性大声说话 is S02-d's second reference
    assert every["notes"]["references_per_utt"] == [1, 2] and one["notes"]["references_per_utt"] == [1, 1]
    assert every["scores"]["bleu4"] > one["scores"]["bleu4"] + 0.1
    hyp_ref = (tmp_path / "exp/caption/tag/baseline_all/style/decode_test/hyp_ref.txt").read_text(encoding="utf-8")
    assert "S02-d\t男性大声说话\t一位男性大声说话\t男性大声说话\n" in hyp_ref
    # without the file: the one caption of utt2caption_style, as references: 1
    (data / "test" / "utt2captions_style").unlink()
    single = _score_frequent(tmp_path, data, "baseline_single")
    assert single["scores"] == one["scores"] and single["notes"]["references_per_utt"] == [1, 1]


@pytest.mark.parametrize("refs, message", [
    ({"S02-d": ["一位男性大声说话"]}, "utterance S02-e has a style caption"),
    ({**MULTI, "S02-d": ["男性大声说话", "一位男性大声说话"]}, "S02-d: the first reference"),
    ({**MULTI, "S02-e": "女性小声说话"}, "S02-e: expected a non-empty JSON array"),
    ({**MULTI, "S02-e": ["女性小声说话", "。"]}, "S02-e: reference '。' has no word"),
])
def test_a_bad_references_file_names_the_file_and_the_utterance(tmp_path, refs, message):
    data = _data(tmp_path, refs)
    with pytest.raises(ValueError, match="utt2captions_style") as e:
        _score_frequent(tmp_path, data, "baseline")
    assert message in str(e.value)


def test_the_references_file_passes_data_dir_validation(tmp_path):
    # sparse, as utt2caption_<kind>: S02-e has no style caption
    data = _data(tmp_path, {"S02-d": MULTI["S02-d"]})
    (data / "test" / "utt2caption_style").write_text("S02-d 一位男性大声说话\n", encoding="utf-8")
    (data / "test" / "spk2utt").write_text("S02 S02-d S02-e\n")
    (data / "test" / "wav.scp").write_text(f"S02-d {tmp_path}/d.wav\nS02-e {tmp_path}/e.wav\n")
    r = subprocess.run([sys.executable, "-m", "etser.validate", "--tables", str(ROOT / "conf" / "data_tables"),
                        str(data / "test")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    # a duplicate line per reference would not be a table: the JSON array is why
    (data / "test" / "utt2captions_style").write_text('S02-d "a"\nS02-d "b"\nS02-e "c"\n')
    r = subprocess.run([sys.executable, "-m", "etser.validate", "--tables", str(ROOT / "conf" / "data_tables"),
                        str(data / "test")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 1 and "utt2captions_style" in r.stdout + r.stderr


def test_the_table_states_the_settings_and_changes_with_them(tmp_path):
    from etser.report.caption_table import caption_table
    data = _data(tmp_path, MULTI)
    _score_frequent(tmp_path, data, "baseline_frequent")
    text = caption_table(tmp_path / "exp" / "caption")
    assert ("Metric settings: segmentation: char (tokenization: auto); references: all (1-2 per utterance, "
            "mean 1.50)") in text
    assert "CLAPScore: audio-text (the caption vs the utterance's audio)" not in text  # not among the metrics
    shutil.rmtree(tmp_path / "exp")
    m = _score_frequent(tmp_path, data, "baseline_frequent", tokenization="jieba", references=1,
                        metrics=["bleu4", "clapscore"])
    assert m["scores"]["clapscore"] is None
    text = caption_table(tmp_path / "exp" / "caption")
    assert ("Metric settings: segmentation: jieba (tokenization: jieba); references: 1 (1 per utterance); "
            "CLAPScore: audio-text (the caption vs the utterance's audio)") in text
    # rows scored differently are listed apart
    _score_frequent(tmp_path, data, "baseline_other", tokenization="char")
    text = caption_table(tmp_path / "exp" / "caption")
    assert "Metric settings differ between rows:" in text
    assert ("- segmentation: char (tokenization: char); references: all (1-2 per utterance, mean 1.50): "
            "tag/baseline_other/style\n") in text


def test_the_table_of_an_older_scoring_says_what_was_not_recorded(tmp_path):
    from etser.report.caption_table import caption_table
    d = tmp_path / "t" / "decode_test"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({"kind": "style", "decoder": "transformer", "set": "test", "seed": 1,
                                                "num_utts": 3, "notes": {"segmentation": "char"},
                                                "scores": {"bleu4": 0.5, "clapscore": None}}))
    assert ("Metric settings: segmentation: char; references: not recorded; CLAPScore: variant not recorded"
            in caption_table(tmp_path))
