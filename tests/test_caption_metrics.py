"""Caption metrics: lexical scores against hand-computed values (English and Chinese), segmentation,
missing Java / CoreNLP / model dirs, and the model-based metrics on tiny random models."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf

from etser.caption.metrics import load_metrics_config, score_captions, tokenize
from etser.caption.score import format_table, table_rows
from etser.caption.text import segment
from tests.helpers_caption import tiny_bert_dir, tiny_clap_dir

BP = math.exp(1 - 6 / 4)  # brevity penalty: 4 hypothesis tokens, 6 reference tokens
# ROUGE-L with pycocoevalcap's beta 1.2: LCS 4 of 4 hypothesis and 6 reference tokens
P, R, B2 = 1.0, 4 / 6, 1.2 ** 2
ROUGE = (1 + B2) * P * R / (R + B2 * P)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _conf(**kw):
    conf = load_metrics_config(None)
    conf.update({"metrics": ["bleu4", "rouge_l", "cider_d"], "ptb_tokenizer": False}, **kw)
    return conf


@pytest.mark.parametrize("ptb", [False, True])
def test_english_bleu_rouge_by_hand(ptb):
    # bigrams: "a man", "man speaks" match; "speaks loudly" does not -> 2/3
    res = score_captions(["A man speaks loudly."], [["a man speaks very loudly today"]], _conf(ptb_tokenizer=ptb))
    s = res["scores"]
    assert s["bleu1"] == pytest.approx(BP * 1.0, abs=1e-6)
    assert s["bleu2"] == pytest.approx(BP * math.sqrt(1.0 * 2 / 3), abs=1e-6)
    assert s["rouge_l"] == pytest.approx(ROUGE, abs=1e-9)
    assert res["notes"]["segmentation"] == ("ptb" if ptb else "word")


def test_chinese_segmented_by_characters_by_hand():
    # hyp 男性大声说话 (6 chars) vs ref 男性大声愤怒地说话 (9): unigrams 6/6, bigrams 4/5 (声说 is not in ref)
    res = score_captions(["男性大声说话。"], [["男性大声愤怒地说话。"]], _conf())
    s = res["scores"]
    assert res["notes"]["segmentation"] == "char"
    assert s["bleu1"] == pytest.approx(math.exp(1 - 9 / 6), abs=1e-6)
    assert s["bleu2"] == pytest.approx(math.exp(1 - 9 / 6) * math.sqrt(0.8), abs=1e-6)
    assert s["rouge_l"] == pytest.approx(ROUGE, abs=1e-9)  # LCS 6 of 6 and 9: the same ratios as above


def test_chinese_never_goes_through_ptb_and_jieba_is_recorded():
    # PTB would keep 男性大声说话 as one token (BLEU-2..4 = 0) and the full-width comma as a token
    res, gts, unit = tokenize(["男性，大声说话"], [["男性大声说话"]], _conf(ptb_tokenizer=True))
    assert unit == "char" and res[0] == ["男 性 大 声 说 话"] and gts[0] == ["男 性 大 声 说 话"]
    words = segment("一位男性大声地说话", "jieba")
    assert "".join(words) == "一位男性大声地说话" and len(words) < 9 and any(len(w) > 1 for w in words)
    out = score_captions(["男性大声说话"], [["男性大声说话"]], _conf(tokenization="jieba"))
    assert out["notes"]["segmentation"] == "jieba" and out["scores"]["bleu1"] == pytest.approx(1.0, abs=1e-6)


def test_cider_d_identical_corpus_is_ten():
    hyps = ["a b c d", "e f g h", "i j k l"]
    s = score_captions(hyps, [[h] for h in hyps], _conf())["scores"]
    assert s["cider_d"] == pytest.approx(10.0, rel=1e-6)


def test_meteor_runs_with_java_and_is_blank_without(tmp_path):
    pytest.importorskip("pycocoevalcap")
    with_java = score_captions(["a man speaks loudly today"] * 2, [["a man speaks loudly today"], ["a cat"]],
                               _conf(metrics=["bleu4", "meteor", "spider"]))
    assert 0.4 < with_java["scores"]["meteor"] < 1.0
    # SPICE never downloads: blank with the jars to provide
    assert with_java["scores"]["spider"] is None and "stanford-corenlp-3.6.0" in with_java["notes"]["spider"]
    msgs = []
    no_java = score_captions(["a man"], [["a man speaks"]], _conf(metrics=["bleu4", "meteor", "spider"],
                                                                   java=str(tmp_path / "nojava"), ptb_tokenizer=True),
                             log=msgs.append)
    assert no_java["scores"]["meteor"] is None and "Java" in no_java["notes"]["meteor"]
    assert no_java["scores"]["spider"] is None and "Java" in no_java["notes"]["spider"]
    assert no_java["scores"]["bleu1"] > 0 and no_java["scores"]["rouge_l"] > 0  # the others still run
    assert any("PTB" in m for m in msgs)


def test_model_metrics_blank_with_one_message_when_dirs_missing(tmp_path):
    msgs = []
    conf = _conf(metrics=["bleu4", "bertscore", "fense", "clapscore"])
    conf["bertscore"]["model_dir"] = str(tmp_path / "nope")
    res = score_captions(["a"], [["a"]], conf, log=msgs.append)
    for k, what in (("bertscore", "bertscore.model_dir"), ("fense", "fense.sbert_dir"), ("clapscore", "clap.model_dir")):
        assert res["scores"][k] is None and what in res["notes"][k]
        assert sum(what in m for m in msgs) == 1


def test_bertscore_on_a_tiny_bert(tmp_path):
    d = tiny_bert_dir(tmp_path / "bert")
    conf = _conf(metrics=["bertscore"])
    conf["bertscore"]["model_dir"] = str(d)
    a, b = "the voice is high and the pace is fast", "a speaker with a low voice talks slow"
    same = score_captions([a], [[a]], conf)["scores"]
    assert same["bertscore"] == pytest.approx(1.0, abs=1e-5)
    ab = score_captions([a], [[b]], conf)["scores"]
    ba = score_captions([b], [[a]], conf)["scores"]
    assert ab["bertscore"] < 0.999
    # greedy matching: precision of (a vs b) is the recall of (b vs a)
    assert ab["bertscore_p"] == pytest.approx(ba["bertscore_r"], abs=1e-6)
    # several references: the best one counts
    multi = score_captions([a], [[b, a]], conf)["scores"]
    assert multi["bertscore"] == pytest.approx(1.0, abs=1e-5)


def test_fense_penalises_captions_the_error_detector_flags(tmp_path):
    import torch
    from transformers import BertForSequenceClassification

    sbert = tiny_bert_dir(tmp_path / "sbert")
    conf = _conf(metrics=["fense"])
    conf["fense"].update(sbert_dir=str(sbert))
    scores = {}
    for name, bias in (("ok", -20.0), ("bad", 20.0)):
        d = tiny_bert_dir(tmp_path / f"ech_{name}", classifier_labels=["add_tail", "error"])
        m = BertForSequenceClassification.from_pretrained(str(d))
        with torch.no_grad():
            m.classifier.bias[:] = torch.tensor([0.0, bias])
        m.save_pretrained(str(d))
        conf["fense"]["echecker_dir"] = str(d)
        scores[name] = score_captions(["a high voice"], [["the voice is high", "a low voice"]], conf)["scores"]["fense"]
    assert 0 < scores["ok"] <= 1
    assert scores["bad"] == pytest.approx(0.1 * scores["ok"], rel=1e-5)


def test_clapscore_on_a_tiny_clap(tmp_path):
    d = tiny_clap_dir(tmp_path / "clap")
    rng = np.random.default_rng(0)
    wavs = []
    for i in range(2):
        p = tmp_path / f"u{i}.wav"
        sf.write(p, (0.1 * rng.normal(size=8000 + 2000 * i)).astype(np.float32), 16000)
        wavs.append(str(p))
    conf = _conf(metrics=["clapscore"])
    conf["clap"]["model_dir"] = str(d)
    hyps = ["a high voice", "a low voice"]
    r1 = score_captions(hyps, [["x"], ["y"]], conf, wavs=wavs)
    r2 = score_captions(hyps[::-1], [["x"], ["y"]], conf, wavs=wavs)
    per = r1["per_utt"]["clapscore"]
    assert len(per) == 2 and all(-1 <= v <= 1 for v in per)
    assert r1["scores"]["clapscore"] == pytest.approx(np.mean(per))
    assert per != r2["per_utt"]["clapscore"]  # the text matters
    assert score_captions(hyps, [["x"], ["y"]], conf)["scores"]["clapscore"] is None  # no wav.scp: blank


def test_table_rows_mean_std_and_blank_cells(tmp_path):
    paths = []
    for seed, b in ((1, 0.2), (2, 0.4)):
        p = tmp_path / f"m{seed}.json"
        p.write_text(json.dumps({"kind": "style", "decoder": "transformer", "set": "test", "seed": seed,
                                 "num_utts": 5, "notes": {"segmentation": "char"},
                                 "scores": {"bleu4": b, "rouge_l": 0.5, "meteor": None, "cider_d": 1.0}}))
        paths.append(p)
    rows = table_rows(paths)
    assert len(rows) == 1 and rows[0]["seeds"] == 2
    assert rows[0]["bleu4"] == pytest.approx((0.3, 0.1))
    assert rows[0]["meteor"] is None and rows[0]["spider"] is None
    text = format_table(rows)
    assert "| style | transformer | 2 | 0.300 ± 0.100 | 0.500 ± 0.000 |  |" in text


def test_caption_table_from_an_exp_tree(tmp_path):
    from etser.report.caption_table import caption_table, main

    for dec, kind, b in (("transformer", "emotion", 0.5), ("baseline_nearest", "speaker", 0.25)):
        d = tmp_path / dec / kind / "decode_test"
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({"kind": kind, "decoder": dec, "set": "test", "seed": 1,
                                                    "num_utts": 3, "notes": {"segmentation": "jieba"},
                                                    "scores": {"bleu4": b}}))
    assert "`transformer` decoded the best epoch on val." in caption_table(tmp_path, heading=True)
    text = caption_table(tmp_path)
    lines = text.splitlines()
    # kinds in the order speaker, style, emotion, overall
    assert lines[2].startswith("| speaker | baseline_nearest | 1 | 0.250 |")
    assert lines[3].startswith("| emotion | transformer | 1 | 0.500 |") and "segmentation: jieba" in text
    assert main([str(tmp_path / "nothing")]) == 1


def test_spider_runs_spice_with_the_given_corenlp_jars(tmp_path):
    # a stand-in for java that checks the command and answers as SpiceScorer does (CoreNLP 3.6.0 cannot be
    # downloaded here, so the real SPICE cannot run in the tests)
    core = tmp_path / "corenlp"
    core.mkdir()
    for j in ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar"):
        (core / j).write_bytes(b"")
    fake = tmp_path / "java"
    fake.write_text(f"""#!{__import__('sys').executable}
import json, sys
a = sys.argv[1:]
cp = a[a.index("-cp") + 1]
assert "spice-1.0.jar" in cp and "{core}/stanford-corenlp-3.6.0-models.jar" in cp, cp
assert a[a.index("-cp") + 2] == "edu.anu.spice.SpiceScorer"
items = json.load(open(a[a.index("-cp") + 3]))
json.dump([{{"image_id": it["image_id"], "scores": {{"All": {{"f": 0.5 if it["test"] == it["refs"][0] else 0.1}}}}}}
           for it in items], open(a[a.index("-out") + 1], "w"))
""")
    fake.chmod(0o755)
    hyps = ["a b c d", "e f g h"]
    conf = _conf(metrics=["bleu4", "spider"], java=str(fake), spice_corenlp_dir=str(core))
    s = score_captions(hyps, [["a b c d"], ["x y z"]], conf)["scores"]
    assert s["spice"] == pytest.approx(0.3)
    assert s["spider"] == pytest.approx((s["cider_d"] + 0.3) / 2)


def test_empty_hypothesis_scores_zero_without_error():
    res = score_captions(["", "a b c"], [["a b"], ["a b c"]], _conf())
    assert res["per_utt"]["rouge_l"][0] == 0.0 and res["per_utt"]["rouge_l"][1] == pytest.approx(1.0)
