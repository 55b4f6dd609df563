"""Fusion and sentiment through the recipe path: etser.learn.train / etser.learn.score / etser.plan / etser.report.results on a
synthetic three-stream corpus (speech, text, visual dumps with frames) whose 4-class label needs two streams."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from etser.learn.checkpoint import list_epochs
from etser.datadir import write_table
from etser.models.fusion import FUSION_MODELS
from etser.launch.plan import PlanError, resolve_streams
from etser.learn.score import score_exp
from etser.tasks import get_task
from etser.learn.train import load_config, train
from helpers_feats import write_dump
from helpers_fusion import SMALL

FOUR = ["neutral", "happy", "sad", "angry"]
SIZES = {"train": 64, "val": 24, "test": 24}
DIMS = {"speech": 6, "text": 5, "visual": 4}


def make_fusion_corpus(root: Path, sizes=SIZES, drop: dict | None = None, sentiment: dict | None = None):
    """data/<set> (utt2emo_multi: class = 2*bit_speech + bit_text; utt2sentiment = +-1 by the speech bit) and
    dump/<modality>/<set> with frames; ``drop`` {modality: [utts]} leaves utterances out of a stream."""
    rng = np.random.default_rng(0)
    data = root / "data"
    for set_name, n in sizes.items():
        utts = [f"S{i % 4 + 1:02d}-{set_name}{i:04d}" for i in range(n)]
        bits = {u: (i % 2, (i // 2) % 2) for i, u in enumerate(utts)}
        d = data / set_name
        d.mkdir(parents=True, exist_ok=True)
        write_table(d / "utt2emo_multi", {u: FOUR[2 * a + b] for u, (a, b) in bits.items()})
        sent = {u: f"{(0.8 if a else -0.6) + 0.1 * b:.1f}" for u, (a, b) in bits.items()}
        sent.update((sentiment or {}).get(set_name, {}))
        write_table(d / "utt2sentiment", sent)
        write_table(d / "utt2spk", {u: u.split("-")[0] for u in utts})
        for mod, dim in DIMS.items():
            frames = {}
            for u in utts:
                if u in (drop or {}).get(mod, ()):
                    continue
                t = int(rng.integers(6, 14)) if mod != "text" else int(rng.integers(6, 9))
                x = rng.normal(size=(t, 2, dim)).astype(np.float32)
                a, b = bits[u]
                if mod == "speech":
                    x[:, :, 0] += 2.0 * a
                elif mod == "text":
                    x[:, :, 0] += 2.0 * b
                frames[u] = x
            write_dump(root / "dump" / mod / set_name, frames, (0, 1), upstream=f"syn_{mod}", modality=mod)
    return data, {m: root / "dump" / m for m in DIMS}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_fusion_corpus(tmp_path_factory.mktemp("fusion"))


def _conf(algo: str, **extra):
    small = json.dumps(SMALL[algo]).replace(" ", "")
    over = [f"head_conf.algo={algo}", f"head_conf.fusion_conf={small}", "max_epochs=3", "patience=null",
            "batch_size=16", *[f"{k}={v}" for k, v in extra.items()]]
    return load_config(Path("conf/train/fusion.yaml"), over)


@pytest.mark.parametrize("algo", sorted(FUSION_MODELS))
def test_every_algorithm_trains_and_scores_through_the_recipe(corpus, tmp_path, algo):
    data, dumps = corpus
    exp = tmp_path / algo
    summary = train(_conf(algo), "multi_four", data, None, exp, 1, fusion_streams=dumps)
    assert summary["epochs"] == 3 and (exp / "best.pt").is_file()
    conf = json.loads(json.dumps(__import__("yaml").safe_load((exp / "config.yaml").read_text())))
    assert conf["tag"] == "fusion_speech+text+visual" and conf["select_metric"] == "weighted_f1"
    # conf/fusion/<algo>.yaml train section: lr, grad clip by value
    assert conf["grad_clip_mode"] == "value"
    res = score_exp(exp, ["test"])["test"]
    assert res["algo"] == algo and res["num_utts"] == SIZES["test"]
    missing = json.loads((exp / "decode_test" / "missing.json").read_text())["patterns"]
    assert len(missing) == 7 and "speech+text+visual" in missing
    # all modalities present = the plain scoring
    assert missing["speech+text+visual"]["weighted_f1"] == pytest.approx(res["weighted_f1"])


def test_attention_fusion_needs_both_streams_and_learns(corpus, tmp_path):
    data, dumps = corpus
    exp = tmp_path / "att"
    train(_conf("attention", max_epochs=60, **{"optim_conf.lr": 0.01}), "multi_four", data, None, exp, 1,
          fusion_streams=dumps)
    res = score_exp(exp, ["test"])["test"]
    missing = json.loads((exp / "decode_test" / "missing.json").read_text())["patterns"]
    # the label needs speech and text: each alone is at most half right; together well above
    assert res["ua"] > 0.75, res["ua"]
    assert missing["speech"]["ua"] <= 0.6 and missing["text"]["ua"] <= 0.6, missing


def test_sentiment_task_metrics_constants_and_predictions(corpus, tmp_path):
    data, dumps = corpus
    exp = tmp_path / "sent"
    summary = train(_conf("attention", max_epochs=30, **{"optim_conf.lr": 0.01}), "sentiment", data, None, exp,
                    1, fusion_streams=dumps)
    assert summary["select_metric"] == "f1_weighted"
    m = score_exp(exp, ["test"])["test"]
    assert m["kind"] == "continuous" and 0 <= m["f1_weighted"] <= 1 and m["mae"] >= 0
    assert set(m["constant"]) == {"train_mean", "all_negative"}
    # the sign is in speech: the model beats the constant predictors on the sign metric
    assert m["f1_weighted"] > m["constant"]["all_negative"]["f1_weighted"] + 0.2
    lines = (exp / "decode_test" / "predictions.txt").read_text().splitlines()
    assert lines[0] == "# utt ref pred" and len(lines) == SIZES["test"] + 1
    assert "train_mean" in (exp / "decode_test" / "report.txt").read_text()


@pytest.mark.parametrize("value,msg", [("2.5", r"outside \[-2, 2\]"), ("abc", "not a number"), ("nan", "outside")])
def test_bad_sentiment_value_is_named(tmp_path, value, msg):
    d = tmp_path / "train"
    d.mkdir()
    write_table(d / "utt2sentiment", {"u1": "0.5", "u2": value})
    with pytest.raises(ValueError, match=f"utt2sentiment: utterance u2 has .*{msg}"):
        get_task("sentiment").read_targets(d)


def test_stream_with_other_utterances_is_refused_or_missing(tmp_path):
    data, dumps = make_fusion_corpus(tmp_path, drop={"visual": ["S02-train0001", "S03-train0002"]})
    with pytest.raises(ValueError, match=r"stream visual .* lacks 2: S02-train0001 S03-train0002.*allow_missing"):
        train(_conf("attention"), "multi_four", data, None, tmp_path / "refused", 1, fusion_streams=dumps)
    exp = tmp_path / "allowed"
    train(_conf("attention", allow_missing="true"), "multi_four", data, None, exp, 1, fusion_streams=dumps)
    assert "allow_missing" in (exp / "train.log").read_text()
    assert score_exp(exp, ["test"])["test"]["num_utts"] == SIZES["test"]


def test_stream_never_extracted_names_the_stage_2_run(tmp_path, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    with pytest.raises(PlanError, match=r"never extracted\): run ./run.sh --stage 2 --stop_stage 2 --upstreams "
                                        r"visual_baseline"):
        resolve_streams(f"visual=visual_baseline speech={tmp_path}", dump_root=str(tmp_path / "nodump"))


@pytest.mark.parametrize("algo", ["attention", "mfn"])
def test_resume_after_kill_gives_the_uninterrupted_result(corpus, tmp_path, algo):
    import torch

    data, dumps = corpus
    streams = " ".join(f"{m}={d}" for m, d in dumps.items())
    small = json.dumps(SMALL[algo]).replace(" ", "")

    def argv(exp):
        return [sys.executable, "-m", "etser.learn.train", "--config", "conf/train/fusion.yaml", "--task", "multi_four",
                "--data_dir", str(data), "--fusion_streams", streams, "--exp_dir", str(exp),
                "--conf", f"head_conf.algo={algo}", "--conf", f"head_conf.fusion_conf={small}",
                "--conf", "max_epochs=40", "--conf", "patience=null", "--conf", "batch_size=16"]

    ref = tmp_path / "ref"
    subprocess.run(argv(ref), check=True, capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(argv(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # any epoch >= 3 (older epochs are pruned as training goes on, so one file may exist only for a moment)
    deadline = time.monotonic() + 120
    while not any(n >= 3 for n, _ in list_epochs(killed)):
        assert proc.poll() is None and time.monotonic() < deadline, "training ended before it could be killed"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "done").exists()
    subprocess.run(argv(killed), check=True, capture_output=True)
    assert "resumed from" in (killed / "train.log").read_text()
    a = torch.load(ref / "best.pt", weights_only=False)
    b = torch.load(killed / "best.pt", weights_only=False)
    assert a["epoch"] == b["epoch"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_results_md_has_the_fusion_sentiment_and_missing_tables(corpus, tmp_path):
    from etser.report.results import write_results

    data, dumps = corpus
    for task in ("multi_four", "multi_all", "sentiment"):
        exp = tmp_path / "exp" / "fusion_speech+text+visual" / "attention" / task / "seed1"
        train(_conf("attention", max_epochs=4), task, data, None, exp, 1, fusion_streams=dumps)
        score_exp(exp, ["test"])
    text = write_results(tmp_path / "exp", tmp_path / "exp" / "RESULTS.md", num_samples=10)
    er = text.split("## Multimodal emotion recognition", 1)[1].split("\n## ", 1)[0]
    assert "| Features | Algorithm | Fusion level | Multimodal(Four) WF1 | Multimodal(All) WF1 | Mean WF1 |" in er
    assert "| syn_speech + syn_text + syn_visual | attention | utterance |" in er
    sent = text.split("## Multimodal sentiment analysis", 1)[1].split("\n## ", 1)[0]
    assert "| Text | Speech | Visual | Algorithm | Discrete(Four) | Discrete(All) | Continuous | Mean |" in sent
    assert "| syn_text | syn_speech | syn_visual | attention |" in sent and "constant all_negative" in sent
    miss = text.split("## Missing modalities", 1)[1]
    assert "| speech+text+visual | speech+text | speech+visual | text+visual | speech | text | visual |" in miss
    assert miss.count("| attention |") == 3


def test_paper_protocol_selects_on_val_weighted_f1(corpus, tmp_path):
    import yaml

    data, dumps = corpus
    exp = tmp_path / "paper"
    conf = load_config(Path("conf/train/paper.yaml"), ["max_epochs=3"])
    summary = train(conf, "multi_four", data, dumps["speech"], exp, 1)
    assert summary["select_metric"] == "weighted_f1"
    assert yaml.safe_load((exp / "config.yaml").read_text())["select_metric"] == "weighted_f1"
    log = (exp / "train.log").read_text()
    # the epoch marked best is the one with the highest val weighted-F1 (earliest on ties)
    rows = [ln for ln in log.splitlines() if " epoch " in ln and "val_weighted_f1" in ln]
    wf1 = [float(ln.split("val_weighted_f1 ")[1].split()[0]) for ln in rows]
    assert summary["best_epoch"] == int(np.argmax(wf1)) + 1
