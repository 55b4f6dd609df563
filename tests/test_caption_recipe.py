"""Captioning through ./run.sh: stages 1-5 give the caption table in exp/RESULTS.md, a killed caption training
resumes on the rerun, and bad input (a decoder dir that does not exist, features without frames) stops with
one message before any job.

The working directory has its own conf/upstream (with a frames-enabled fbank config written here) and
conf/caption (a smaller, faster from-scratch decoder, and metrics without METEOR, whose Java start-up costs
~35 s; METEOR itself is tested in test_caption_metrics.py).
"""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
import yaml

from tests.helpers_faults import ROOT, kill_run, run_recipe, start_recipe, wait_until

FRAMES_CONF = """name: fbank_no_cmvn
batch: {policy: padded, max_seconds: 120, max_items: 32}
chunk: {seconds: 600, overlap: 4}
frames: {layers: all, dtype: float16}
"""
KINDS = ("speaker", "style", "emotion", "overall")
COMMON = ("--upstreams", "fbank_frames", "--caption_upstream", "fbank_frames", "--tasks", "caption", "--nj", "2")


def _workdir(path):
    path.mkdir(parents=True)
    for name in ("run.sh", "path.sh", "cmd.sh", "local", "utils"):
        (path / name).symlink_to(ROOT / name)
    (path / "conf").mkdir()
    for p in (ROOT / "conf").iterdir():
        if p.name not in ("upstream", "caption"):
            (path / "conf" / p.name).symlink_to(p)
    shutil.copytree(ROOT / "conf" / "upstream", path / "conf" / "upstream")
    (path / "conf" / "upstream" / "fbank_frames.yaml").write_text(FRAMES_CONF)
    shutil.copytree(ROOT / "conf" / "caption", path / "conf" / "caption")
    conf = yaml.safe_load((ROOT / "conf" / "caption" / "transformer.yaml").read_text())
    # 4 epochs, the last 3 averaged (the committed config averages too)
    conf.update(max_epochs=4, patience=None, average_last=3, keep_checkpoints=3, decoder_conf={**conf["decoder_conf"], "d_model": 64, "ffn_dim": 128},
                adaptor_conf={**conf["adaptor_conf"], "hidden_dim": 64, "downsample": 8})
    (path / "conf" / "caption" / "transformer.yaml").write_text(yaml.safe_dump(conf))
    metrics = yaml.safe_load((ROOT / "conf" / "caption" / "metrics.yaml").read_text())
    metrics["metrics"] = [m for m in metrics["metrics"] if m != "meteor"]
    (path / "conf" / "caption" / "metrics.yaml").write_text(yaml.safe_dump(metrics))
    return path


@pytest.fixture(scope="module")
def recipe(tmp_path_factory, small_release):
    w = _workdir(tmp_path_factory.mktemp("caption_recipe") / "work")
    r = run_recipe(w, "--db_root", small_release, *COMMON)
    assert r.returncode == 0, r.stderr[-4000:]
    return {"dir": w, "stderr": r.stderr}


def _exp(w, kind):
    return next((w / "exp" / "caption").glob(f"*/transformer/{kind}/seed1"))


def test_stages_1_to_5_write_the_caption_table(recipe):
    w = recipe["dir"]
    text = (w / "exp" / "RESULTS.md").read_text()
    assert "## Captioning (test)" in text and "| caption | decoder | seeds | BLEU-4 | ROUGE-L | METEOR |" in text
    for kind in KINDS:
        for system in ("transformer", "baseline_frequent", "baseline_nearest"):
            assert re.search(rf"^\| {kind} \| {system} \| 1 \| \d\.\d{{3}} \| \d\.\d{{3}} \|", text, re.M), (kind, system)
    assert "segmentation: char" in text
    assert "SPIDEr blank: SPICE/SPIDEr need Stanford CoreNLP 3.6.0" in text and "BERTScore blank:" in text
    # scores beside the outputs, and the table's figures are those of metrics.json
    m = json.loads((_exp(w, "style") / "decode_test" / "metrics.json").read_text())
    assert m["kind"] == "style" and m["set"] == "test" and m["num_utts"] > 10 and m["tag"].startswith("fbank_frames_")
    assert f"| style | transformer | 1 | {m['scores']['bleu4']:.3f} | {m['scores']['rouge_l']:.3f} |" in text
    # what was decoded is said over the table: the mean of the last 3 of 4 epochs (this recipe's config)
    assert m["averaged_epochs"] == [2, 3, 4] and m["best_epoch"] == 4
    assert "`transformer` decoded the mean of the weights of epochs 2-4." in text
    hyp_ref = (_exp(w, "style") / "decode_test" / "hyp_ref.txt").read_text().splitlines()
    assert len(hyp_ref) == m["num_utts"] + 1 and all(len(line.split("\t")) == 3 for line in hyp_ref[1:])
    # captioning only (--tasks caption): no classifier was trained
    assert not list((w / "exp").glob("*/*/*/seed*/done"))
    assert "Stage 3: 4 runs of exp/caption_train_jobs.txt" in recipe["stderr"]
    assert "Stage 4: 12 runs of exp/caption_score_jobs.txt in 1 jobs" in recipe["stderr"]   # one METEOR Java


def test_kill_during_caption_training_then_resume(tmp_path, recipe):
    w = _workdir(tmp_path / "work")
    for d in ("data", "dump"):
        shutil.copytree(recipe["dir"] / d, w / d, symlinks=True)
    p = start_recipe(w, "--stage", 3, "--stop_stage", 3, *COMMON)
    first = lambda: any((w / "exp" / "caption").glob("*/transformer/*/seed1/checkpoints/epoch2.pt"))  # noqa: E731
    wait_until(first, p, "a caption training's second epoch checkpoint")
    kill_run(p)
    r = run_recipe(w, "--stage", 3, "--stop_stage", 3, *COMMON)
    assert r.returncode == 0, r.stderr[-3000:]
    resumed = [k for k in KINDS if "resumed from" in (_exp(w, k) / "train.log").read_text()]
    assert resumed, "no training resumed from its checkpoint"
    for k in KINDS:
        # the same weights as the uninterrupted run of the module's recipe (CPU, same seed and threads)
        a = torch.load(_exp(w, k) / "best.pt", weights_only=False)
        b = torch.load(_exp(recipe["dir"], k) / "best.pt", weights_only=False)
        assert a["epoch"] == b["epoch"]
        assert all(torch.equal(a["model"][n], b["model"][n]) for n in b["model"]), k


def test_missing_decoder_dir_stops_before_any_job(tmp_path, recipe):
    w = _workdir(tmp_path / "work")
    for d in ("data", "dump"):
        shutil.copytree(recipe["dir"] / d, w / d, symlinks=True)
    r = run_recipe(w, "--stage", 3, *COMMON, "--caption_decoders", "transformer gpt2")
    assert r.returncode != 0
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "caption decoder gpt2 (conf/caption/gpt2.yaml)" in errors[0], r.stderr[-2000:]
    assert "is not a local Hugging Face model directory" in errors[0]
    assert not (w / "exp" / "caption").exists() and not list((w / "exp").rglob("caption_train.*.log"))
    r = run_recipe(w, "--stage", 3, *COMMON, "--caption_decoders", "gtp2")
    assert r.returncode != 0 and "caption decoder gtp2: no conf/caption/gtp2.yaml; known: bart gpt2 qwen2 " \
        "transformer" in r.stderr


def test_features_without_frames_are_refused_at_planning(tmp_path, recipe):
    from etser.launch.plan import main as plan_main

    def main(argv):   # the planner's captioning commands
        return plan_main([f"caption_{argv[0]}", *argv[1:]])

    src = next((recipe["dir"] / "dump").glob("fbank_frames_*"))
    fd = tmp_path / "dump" / "nofr_0000"
    for s in ("train", "val"):
        (fd / s).mkdir(parents=True)
        meta = json.loads((src / s / "meta.json").read_text())
        (fd / s / "meta.json").write_text(json.dumps({**meta, "frame_layers": None}))
    out = tmp_path / "jobs.txt"
    rc = main(["train", "--feats_dir", str(fd), "--upstream", "nofr", "--decoders", "transformer", "--data_dir",
               str(recipe["dir"] / "data"), "--conf_dir", str(ROOT / "conf" / "caption"), "--out", str(out)])
    assert rc == 1 and not out.exists()
    rc = main(["train", "--feats_dir", str(src), "--decoders", "transformer", "--kinds", "speaker mood",
               "--data_dir", str(recipe["dir"] / "data"), "--conf_dir", str(ROOT / "conf" / "caption"),
               "--out", str(out)])
    assert rc == 1 and not out.exists()
    rc = main(["score", "--feats_dir", str(src), "--decoders", "transformer", "--kinds", "style", "--seeds", "1 2",
               "--data_dir", str(recipe["dir"] / "data"), "--conf_dir", str(ROOT / "conf" / "caption"),
               "--out", str(out)])
    lines = [x for x in out.read_text().splitlines() if not x.startswith("#")]
    assert rc == 0 and len(lines) == 4  # two seeds and two baselines
    assert "--baseline nearest --kind style" in lines[3] and "caption/fbank_frames_" in lines[0]
