"""Stage 3 training: learns, is deterministic, resumes after kill -9 to the same result, skips finished dirs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from etser.learn import train
from etser.learn.checkpoint import list_epochs, read_exp_config
from etser.featset import Stream
from etser.tasks import get_task
from tests.helpers_feats import make_corpus

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    data_dir, feats_dir = make_corpus(root, {"train": 140, "val": 42, "test": 42}, num_layers=3, dim=8,
                                      frame_layers=(1, 2), separation=1.0)
    return data_dir, feats_dir


def _args(data_dir, feats_dir, exp_dir, head="superb", task="speech_four", seed=1, conf=()):
    argv = ["--config", str(ROOT / "conf" / "train" / f"{head}.yaml"), "--task", task, "--seed", str(seed),
            "--data_dir", str(data_dir), "--feats_dir", str(feats_dir), "--exp_dir", str(exp_dir)]
    for c in conf:
        argv += ["--conf", c]
    return argv


def _split(data_dir, feats_dir, set_name, task, layers, kind, cache=None):
    return train.load_split(get_task(task), data_dir, set_name, [Stream("speech", feats_dir, tuple(layers), kind)],
                            cache=cache)


def _history(exp_dir: Path) -> list[dict]:
    last = list_epochs(exp_dir)[-1][1]
    hist = torch.load(last, weights_only=False)["state"]["history"]
    return [{k: v for k, v in h.items() if k != "seconds"} for h in hist]


def _best_state(exp_dir: Path) -> dict:
    return torch.load(exp_dir / "best.pt", weights_only=False)["model"]


@pytest.mark.parametrize("head,conf", [
    ("superb", ["optim_conf.lr=0.01", "max_epochs=15"]),
    ("superb", ["optim_conf.lr=0.01", "max_epochs=15", "class_weighted_loss=true", "head_conf.stats=[mean]"]),
    ("mlp", ["max_epochs=15"]),
    ("paper", ["max_epochs=15"]),
    ("attentive", ["max_epochs=8"]),
])
def test_heads_learn_and_write_exp_dir(corpus, tmp_path, head, conf):
    data_dir, feats_dir = corpus
    exp = tmp_path / head
    assert train.main(_args(data_dir, feats_dir, exp, head=head, conf=conf)) == 0
    done = json.loads((exp / "done").read_text())
    assert done["val_metrics"]["ua"] > 0.6, done   # chance is 0.25 for four classes
    for name in ("config.yaml", "cmd", "train.log", "best.pt", "curve.png", "feats_meta.json"):
        assert (exp / name).is_file(), name
    assert (exp / "cmd").read_text().startswith("python -m etser.learn.train --config")
    conf_out = read_exp_config(exp)
    assert conf_out["task"] == "speech_four" and conf_out["head"] == head
    log = (exp / "train.log").read_text()
    # 3 of the 7 synthetic classes are not in the four-class task: the log says how many and why
    assert "left out 60 whose label is not one of its 4 classes (disgusted 20, fearful 20, surprised 20)" in log
    assert "epoch 1 train_loss" in log and "val_ua" in log
    assert len(list_epochs(exp)) <= 2
    if "class_weighted_loss=true" in conf:
        # balanced synthetic classes: inverse-frequency weights are all 1
        assert "class weights: neutral 1.000, happy 1.000, sad 1.000, angry 1.000" in log


def test_finished_dir_is_skipped_and_changed_config_redone_or_refused(corpus, tmp_path, caplog):
    data_dir, feats_dir = corpus
    exp = tmp_path / "e"
    argv = _args(data_dir, feats_dir, exp, conf=["max_epochs=3"])
    assert train.main(argv) == 0
    mtime = (exp / "best.pt").stat().st_mtime_ns
    assert train.main(argv) == 0
    assert (exp / "best.pt").stat().st_mtime_ns == mtime
    assert "already trained" in caplog.text and "up to date" in caplog.text
    # another config into the same exp dir: refused on request, naming the change, nothing touched ...
    changed = _args(data_dir, feats_dir, exp, conf=["max_epochs=4"])
    assert train.main(changed + ["--on_change", "refuse"]) == 1
    assert "is out of date: config: changed" in caplog.text
    assert (exp / "best.pt").stat().st_mtime_ns == mtime
    # ... and retrained by default, saying why
    assert train.main(changed) == 0
    assert "retraining from scratch, its inputs changed: config: changed" in caplog.text
    mtime2 = (exp / "best.pt").stat().st_mtime_ns
    assert mtime2 != mtime
    assert train.main(changed + ["--overwrite", "true"]) == 0
    assert (exp / "best.pt").stat().st_mtime_ns != mtime2


def test_resume_after_kill_gives_the_uninterrupted_result(corpus, tmp_path):
    data_dir, feats_dir = corpus
    # dropout in the head makes the torch RNG state matter too; no early stop so the run is long enough to kill
    conf = ["max_epochs=150", "patience=null", "optim_conf.lr=0.003"]
    ref = tmp_path / "ref"
    assert train.main(_args(data_dir, feats_dir, ref, head="mlp", conf=conf)) == 0

    killed = tmp_path / "killed"
    argv = [sys.executable, "-m", "etser.learn.train", *_args(data_dir, feats_dir, killed, head="mlp", conf=conf)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (killed / "checkpoints" / "epoch5.pt").exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "training did not reach epoch 5"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "done").exists()
    epoch_at_kill = list_epochs(killed)[-1][0]
    assert 5 <= epoch_at_kill < 150, epoch_at_kill

    # the rerun resumes (same options as the killed run) and ends where the uninterrupted run ended
    assert train.main(argv[3:]) == 0
    assert "resumed from" in (killed / "train.log").read_text()
    assert _history(killed) == _history(ref)
    a, b = _best_state(ref), _best_state(killed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ra, rb = (json.loads((d / "done").read_text()) for d in (ref, killed))
    assert ra["val_metrics"] == rb["val_metrics"] and ra["best_epoch"] == rb["best_epoch"]


def test_seed_changes_the_result_and_same_seed_repeats(corpus, tmp_path):
    data_dir, feats_dir = corpus
    conf = ["max_epochs=3"]
    runs = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        assert train.main(_args(data_dir, feats_dir, tmp_path / name, seed=seed, conf=conf)) == 0
        runs[name] = _best_state(tmp_path / name)
    assert all(torch.equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    assert not all(torch.equal(runs["a"][k], runs["c"][k]) for k in runs["a"])


def test_shared_frame_cache_serves_tasks_with_other_utterances(corpus):
    """A job list shares one cache: a task after another of fewer utterances still gets all its frames."""
    data_dir, feats_dir = corpus
    cache: dict = {}
    four = _split(data_dir, feats_dir, "train", "speech_four", [1, 2], "frames", cache=cache)
    every = _split(data_dir, feats_dir, "train", "speech_all", [1, 2], "frames", cache=cache)
    alone = _split(data_dir, feats_dir, "train", "speech_all", [1, 2], "frames")
    assert len(four) < len(every) == len(alone) == 140
    assert all(torch.equal(a, b) for a, b in zip(every.streams["speech"].frames, alone.streams["speech"].frames))


def test_job_list_runs_its_share(corpus, tmp_path):
    data_dir, feats_dir = corpus
    lines = [" ".join(_args(data_dir, feats_dir, tmp_path / f"exp{i}", task=t, conf=["max_epochs=2"]))
             for i, t in enumerate(["speech_four", "multi_four", "speech_all"])]
    from etser.launch import run
    from etser.runtime import job_list_lines, write_job_file

    job_list = tmp_path / "jobs.txt"
    write_job_file(job_list, "etser.learn.train", 1, lines)
    assert [len(job_list_lines(job_list, j, 2)) for j in (1, 2)] == [2, 1]
    assert run.main(["--job_list", str(job_list), "--job", "2", "--num_jobs", "2"]) == 0
    assert (tmp_path / "exp1" / "done").exists() and not (tmp_path / "exp0" / "done").exists()
    assert run.main(["--job_list", str(job_list), "--job", "1", "--num_jobs", "2"]) == 0
    assert all((tmp_path / f"exp{i}" / "done").exists() for i in range(3))
    assert read_exp_config(tmp_path / "exp2")["classes"] == list(get_task("speech_all").classes)


def test_bad_inputs_are_named(corpus, tmp_path, caplog):
    data_dir, feats_dir = corpus
    bad = tmp_path / "data"
    for s in ("train", "val"):
        (bad / s).mkdir(parents=True)
        lines = (data_dir / s / "utt2emo_audio").read_text().splitlines()
        (bad / s / "utt2emo_audio").write_text("\n".join(lines) + "\n")
    (bad / "val" / "utt2emo_audio").write_text(
        (bad / "val" / "utt2emo_audio").read_text().replace(" sad\n", " bored\n", 1))
    assert train.main(_args(bad, feats_dir, tmp_path / "x")) == 1
    assert "utt2emo_audio: utterance" in caplog.text and "unknown label 'bored'" in caplog.text

    (bad / "val" / "utt2emo_audio").write_text("S01-nofeats angry\n")
    assert train.main(_args(bad, feats_dir, tmp_path / "y")) == 1
    assert "have no features in" in caplog.text and "S01-nofeats" in caplog.text

    assert train.main(_args(bad, feats_dir, tmp_path / "z", task="text_four")) == 1
    assert "utt2emo_text not found" in caplog.text

    with pytest.raises(FileNotFoundError, match="pooled_mean.scp not found: run stage 2"):
        (tmp_path / "no_dump" / "val").mkdir(parents=True)
        (tmp_path / "no_dump" / "val" / "meta.json").write_text((feats_dir / "val" / "meta.json").read_text())
        _split(data_dir, tmp_path / "no_dump", "val", "speech_four", [0], "pooled", cache={})

    with pytest.raises(ValueError, match="unknown option"):
        train.load_config(ROOT / "conf" / "train" / "superb.yaml", ["learning_rate=3"])


def test_run_sh_stages_3_to_5(tmp_path):
    """The recipe's stage blocks: job lists through utils/run.py, decode dirs, RESULTS.md, rerun skips."""
    from etser.features.upstream import config_tag

    for name in ("run.sh", "path.sh", "cmd.sh", "conf", "utils", "local"):
        (tmp_path / name).symlink_to(ROOT / name)
    upstream = tmp_path / "synthetic.yaml"
    upstream.write_text((ROOT / "conf/upstream/fbank_no_cmvn.yaml").read_text())
    tag = config_tag(upstream)
    make_corpus(tmp_path, {"train": 56, "val": 21, "test": 21}, num_layers=2, dim=8, frame_layers=None, tag=tag)
    cmd = ["./run.sh", "--stage", "3", "--stop_stage", "5", "--upstream", str(upstream), "--nj", "2",
           "--tasks", "speech_four speech_all", "--seeds", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    exp = tmp_path / "exp" / tag
    assert len([x for x in (tmp_path / "exp" / "train_jobs.txt").read_text().splitlines() if x[:1] != "#"]) == 2
    for task in ("speech_four", "speech_all"):
        d = exp / "superb" / task / "seed1"
        assert (d / "done").is_file() and (d / "decode_test" / "confusion.png").is_file()
    results_md = (tmp_path / "exp" / "RESULTS.md").read_text()
    assert f"`{tag}`" in results_md and "Speech(Four)" in results_md and "Speech(All)" in results_md
    assert "already trained" not in (tmp_path / "exp" / "log" / "train.1.log").read_text()
    out = subprocess.run(cmd[:4] + ["3"] + cmd[5:], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "already trained" in (tmp_path / "exp" / "log" / "train.1.log").read_text()


def test_half_trained_dir_with_another_config_is_refused_untouched_or_restarted(corpus, tmp_path, caplog):
    data_dir, feats_dir = corpus
    exp = tmp_path / "e"
    assert train.main(_args(data_dir, feats_dir, exp, conf=["max_epochs=2"])) == 0
    (exp / "done").unlink()   # as if killed after its last checkpoint
    before = (exp / "config.yaml").read_text()
    other = _args(data_dir, feats_dir, exp, conf=["max_epochs=2", "optim_conf.lr=0.5"])
    assert train.main(other + ["--on_change", "refuse"]) == 1
    assert "is out of date: config: changed" in caplog.text
    assert (exp / "config.yaml").read_text() == before
    assert train.main(_args(data_dir, feats_dir, exp, conf=["max_epochs=2"])) == 0   # same config: finishes
    assert (exp / "done").is_file()
    # never resumed from another config's checkpoints: started afresh, saying why
    assert train.main(other) == 0
    assert "retraining from scratch, its inputs changed: config: changed" in caplog.text
    assert (exp / "config.yaml").read_text() != before


@pytest.mark.parametrize("head,conf", [
    ("paper", ["max_epochs=4"]),                                   # adam, weight decay, dropout
    ("superb", ["max_epochs=4"]),
    ("superb", ["max_epochs=4", "optim=adamw", "optim_conf.weight_decay=0.01"]),
    ("superb", ["max_epochs=4", "optim=sgd", "optim_conf={lr: 0.01, momentum: 0.9}"]),
])
def test_multi_tensor_optimizer_update_gives_the_per_tensor_weights(corpus, tmp_path, head, conf):
    # the trainer asks for torch's multi-tensor update, for speed only: every weight must be the per-tensor one's
    from etser.learn.loop import make_optimizer
    assert make_optimizer("adam", torch.nn.Linear(2, 2).parameters(), {"lr": 0.1}).defaults["foreach"] is True
    data_dir, feats_dir = corpus
    runs = {}
    for name, extra in (("foreach", []), ("loop", ["optim_conf.foreach=false"])):
        assert train.main(_args(data_dir, feats_dir, tmp_path / name, head=head, conf=conf + extra)) == 0
        runs[name] = _best_state(tmp_path / name)
    assert runs["foreach"].keys() == runs["loop"].keys()
    assert all(torch.equal(runs["foreach"][k], runs["loop"][k]) for k in runs["loop"])
    # the default is not written into the config (its hash names the training: no finished run is redone)
    assert "foreach" not in (tmp_path / "foreach" / "config.yaml").read_text()
