"""ESPnet backend (etser.espnet_backend) and the Python >= 3.12 choice of utils/setup_env.sh.

The end-to-end test really runs espnet2.bin.cls_train (collect-stats, training, n-best averaging) and
espnet2.bin.cls_inference on a tiny synthetic feature set (about a minute on 2 cores).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from etser import espnet_backend as eb

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


# ---------------------------------------------------------------- setup_env.sh: which Python

def _fake(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/bash\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def _fake_python(path: Path, version: str) -> Path:
    """Prints `version` for setup_env's probe; `-m venv DIR` makes DIR/bin/python (a copy); `-m pip` no-op."""
    return _fake(path, f"""case "$1" in
  -c) echo {version} ;;
  -m) if [ "$2" = venv ]; then mkdir -p "$3/bin"; cp "$0" "$3/bin/python"; fi ;;
esac""")


def _pyenv_shim(path: Path) -> Path:
    # what pyenv's shims do for a version that PYENV_VERSION does not select
    return _fake(path, 'echo "pyenv: ${0##*/}: command not found" >&2; exit 127')


def _setup_env(tmp_path: Path, bindir: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    repo = tmp_path / "repo"
    if not repo.exists():
        (repo / "utils").mkdir(parents=True)
        shutil.copy(ROOT / "utils" / "setup_env.sh", repo / "utils" / "setup_env.sh")
        (repo / "requirements.txt").write_text("espnet==202611\n")
    e = {"PATH": f"{bindir}:/usr/bin:/bin", "HOME": str(tmp_path / "home"), "PYENV_ROOT": str(tmp_path / "nopyenv")}
    e.update(env or {})
    return subprocess.run(["bash", str(repo / "utils" / "setup_env.sh"), *args], env=e, capture_output=True,
                          text=True, timeout=60)


def test_setup_env_prefers_python312_that_runs(tmp_path):
    bindir = tmp_path / "bin"
    _pyenv_shim(bindir / "python3.12")                      # a pyenv shim that fails
    _fake_python(bindir / "python3.13", "3.13.0")
    _fake_python(bindir / "python3", "3.11.2")
    r = _setup_env(tmp_path, bindir, "--print-python")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["python3.13", "3.13.0"]


def test_setup_env_finds_pyenv_version(tmp_path):
    bindir = tmp_path / "bin"
    _pyenv_shim(bindir / "python3.12")
    _pyenv_shim(bindir / "python3.13")
    _fake_python(bindir / "python3", "3.11.7")
    prefix = tmp_path / "pyenv" / "versions"
    _fake_python(prefix / "3.12.1" / "bin" / "python", "3.12.1")
    _fake_python(prefix / "3.12.10" / "bin" / "python", "3.12.10")
    _fake(bindir / "pyenv", f"""case "$1" in
  versions) printf '2.7.18\\n3.11.7\\n3.12.1\\n3.12.10\\n' ;;
  prefix) echo {prefix}/$2 ;;
esac""")
    r = _setup_env(tmp_path, bindir, "--print-python")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [f"{prefix}/3.12.10/bin/python", "3.12.10"]   # newest 3.12 patch release


def test_setup_env_python3_if_new_enough_else_one_clear_line(tmp_path):
    bindir = tmp_path / "bin"
    _fake_python(bindir / "python3", "3.12.4")
    assert _setup_env(tmp_path, bindir, "--print-python").stdout.split() == ["python3", "3.12.4"]
    _fake_python(bindir / "python3", "3.11.2")
    r = _setup_env(tmp_path, bindir, "--print-python")
    assert r.returncode == 1 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Python 3.12" in lines[0] and "python3 (3.11.2)" in lines[0]
    assert "--python" in lines[0] and "PYTHON=" in lines[0]


def test_setup_env_user_python_checked(tmp_path):
    bindir = tmp_path / "bin"
    old = _fake_python(tmp_path / "old" / "python", "3.11.2")
    _fake_python(bindir / "python3.12", "3.12.1")
    r = _setup_env(tmp_path, bindir, "--print-python", env={"PYTHON": str(old)})
    assert r.returncode == 1 and f"{old} is Python 3.11.2" in r.stderr
    new = _fake_python(tmp_path / "new" / "python", "3.13.1")
    r = _setup_env(tmp_path, bindir, "--python", str(new), "--print-python")
    assert r.stdout.split() == [str(new), "3.13.1"]


def test_setup_env_rebuilds_a_311_venv(tmp_path):
    bindir = tmp_path / "bin"
    _fake_python(bindir / "python3.12", "3.12.1")
    repo = tmp_path / "repo"
    _setup_env(tmp_path, bindir, "--print-python")           # lays out the repo copy
    _fake_python(repo / ".venv" / "bin" / "python", "3.11.2")
    (repo / ".venv" / "stale").write_text("")
    r = _setup_env(tmp_path, bindir)
    assert r.returncode == 0, r.stderr
    assert "has Python 3.11.2; rebuilding it" in r.stderr
    assert not (repo / ".venv" / "stale").exists()
    out = subprocess.run([str(repo / ".venv" / "bin" / "python"), "-c", ""], capture_output=True, text=True)
    assert out.stdout.strip() == "3.12.1"
    assert (repo / ".venv" / ".requirements.sha256").read_text().split()[1] == "python3.12.1"
    r = _setup_env(tmp_path, bindir)                          # stamp matches: nothing to do
    assert r.returncode == 0 and r.stderr == ""


# ---------------------------------------------------------------- inputs and bad input

def test_nothing_else_imports_espnet():
    code = ("import sys, etser.learn.train, etser.learn.score, etser.features.extract, etser.report.results, etser.espnet_backend; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('espnet', 'espnet2')))")
    out = subprocess.run([PY, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'local'}"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_token_list_and_labels_it_cannot_hold():
    assert eb.token_list(["neutral", "happy"]) == ["neutral", "happy", "<unk>"]
    for bad in (["very happy", "sad"], ["<unk>", "sad"], ["sad", "sad"], ["", "sad"]):
        with pytest.raises(eb.EspnetError):
            eb.token_list(bad)


def test_espnet_version_checked(monkeypatch):
    from importlib import metadata

    assert eb.check_espnet() == eb.REQUIRED_ESPNET
    monkeypatch.setattr(metadata, "version", lambda name: "202511")
    with pytest.raises(eb.EspnetError, match=r"needs espnet==202611.*has espnet 202511"):
        eb.check_espnet()


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox not on PATH (apt-get install sox)")
def test_audio_pipes_give_16k_mono_float(tmp_path):
    import kaldiio
    import soundfile as sf

    t = np.arange(44100) / 44100
    left, right = 0.5 * np.sin(2 * np.pi * 220 * t), 0.1 * np.sin(2 * np.pi * 220 * t)
    wav = tmp_path / "a b.wav"                               # a space in the path: quoted in the pipe
    sf.write(wav, np.stack([left, right], 1), 44100, subtype="PCM_16")
    sf.write(tmp_path / "m.wav", left[:16000], 16000, subtype="PCM_16")
    scp = tmp_path / "wav.scp"
    scp.write_text(f"u1 {wav}\nu2 {tmp_path / 'm.wav'}\n")
    entries = eb.audio_entries(scp, ["u1", "u2"])
    (tmp_path / "speech.scp").write_text("".join(f"{k} {v}\n" for k, v in entries.items()))
    reader = kaldiio.load_scp(str(tmp_path / "speech.scp"))
    a, b = reader["u1"], reader["u2"]
    assert a.dtype == np.float32 and a.shape == (16000,) and b.shape == (16000,)
    ref = 0.3 * np.sin(2 * np.pi * 220 * np.arange(16000) / 16000)   # channel mean, resampled
    assert np.abs(a[100:-100] - ref[100:-100]).max() < 0.01
    assert np.abs(b - left[:16000]).max() < 1e-4
    with pytest.raises(eb.EspnetError, match="no entry for 1 labelled utterance"):
        eb.audio_entries(scp, ["u1", "u3"])


# ---------------------------------------------------------------- end to end with ESPnet

def _tiny_corpus(root: Path, dim: int = 8) -> tuple[Path, Path]:
    """data/<set>/utt2emo_audio and dump/tiny_0000/<set>/pooled_mean.scp of 4 separable classes (+ a 5th
    label the Four-class task leaves out)."""
    import kaldiio

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (4, dim))
    classes = ["neutral", "happy", "sad", "angry"]
    for set_name, n in (("train", 48), ("val", 16), ("test", 16)):
        data, feats = root / "data" / set_name, root / "dump" / "tiny_0000" / set_name
        data.mkdir(parents=True)
        feats.mkdir(parents=True)
        labels, mats = {}, {}
        for i in range(n):
            c = i % 4
            utt = f"S01-{set_name}_{i:03d}"
            labels[utt] = classes[c]
            mats[utt] = (centres[c] + rng.normal(0, 1, dim)).astype(np.float32)[None]
        labels[f"S01-{set_name}_999"] = "fearful"
        mats[f"S01-{set_name}_999"] = rng.normal(0, 1, (1, dim)).astype(np.float32)
        (data / "utt2emo_audio").write_text("".join(f"{u} {v}\n" for u, v in sorted(labels.items())))
        with kaldiio.WriteHelper(f"ark,scp:{feats}/pooled_mean.ark,{feats}/pooled_mean.scp") as w:
            for u in sorted(mats):
                w(u, mats[u])
        (feats / "meta.json").write_text(json.dumps({"upstream": "tiny", "num_layers": 1, "dim": dim,
                                                     "frame_layers": None, "config_hash": "0000"}))
    return root / "data", root / "dump" / "tiny_0000"


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'local'}", "OMP_NUM_THREADS": "1"}
    return subprocess.run([PY, "-m", "etser.espnet_backend", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_espnet_train_score_results(tmp_path):
    data, feats = _tiny_corpus(tmp_path)
    conf = yaml.safe_load((ROOT / "conf" / "espnet" / "feats.yaml").read_text())
    conf.update(max_epoch=6, keep_nbest_models=2, batch_size=8, patience=None)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(conf))
    exp = tmp_path / "exp" / "tiny_0000" / "espnet_tiny" / "speech_four" / "seed1"
    train = ["train", "--config", str(config), "--task", "speech_four", "--seed", "1", "--data_dir", str(data),
             "--feats_dir", str(feats), "--exp_dir", str(exp), "--ngpu", "0", "--num_threads", "1"]
    r = _run(train, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    # ESPnet's own layout, and our marker
    for name in ("cmd", "config.yaml", "valid.acc.best.pth", "valid.acc.ave_2best.pth", "valid.acc.ave.pth",
                 "checkpoint.pth", "done", "stats/train/feats_stats.npz", "data/token_list", "data/train/text"):
        assert (exp / name).exists(), name
    assert any((exp / "tensorboard").rglob("events.out.tfevents.*"))
    assert (exp / "data" / "token_list").read_text().split() == ["neutral", "happy", "sad", "angry", "<unk>"]
    assert len((exp / "data" / "train" / "text").read_text().splitlines()) == 48     # 'fearful' left out
    assert "6epoch results" in (exp / "train.log").read_text()

    r = _run(["score", "--exp_dir", str(exp), "--sets", "test", "--data_dir", str(data)], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((exp / "decode_test" / "metrics.json").read_text())
    assert (m["task"], m["head"], m["seed"], m["tag"], m["set"]) == ("speech_four", "espnet_tiny", 1, "tiny_0000",
                                                                     "test")
    assert m["num_utts"] == 16 and m["left_out"] == {"fearful": 1}
    assert m["ua"] > 0.7, m                                  # separable classes; chance is 0.25
    for name in ("predictions.txt", "confusion.txt", "confusion.png", "report.txt"):
        assert (exp / "decode_test" / name).is_file()
    from etser.report.results import find_metrics
    from etser.learn.score import read_predictions

    utts, refs, preds, probs, classes = read_predictions(exp / "decode_test" / "predictions.txt")
    assert classes == ["neutral", "happy", "sad", "angry"] and len(utts) == 16
    assert np.allclose(probs.sum(1), 1, atol=1e-4)
    assert [x["head"] for x in find_metrics(tmp_path / "exp")] == ["espnet_tiny"]

    # a finished training is skipped; without `done` a rerun goes through ESPnet's --resume
    r = _run(train, tmp_path)
    assert r.returncode == 0 and "skipped" in r.stderr
    (exp / "done").unlink()
    r = _run(train, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (exp / "done").is_file()
    assert "collect-stats" not in r.stderr                    # stats were complete
    assert "already reached max_epoch" in (exp / "train.log").read_text() or \
        "resumed" in (exp / "train.log").read_text().lower()


def test_failing_espnet_job_names_its_log(tmp_path):
    data, feats = _tiny_corpus(tmp_path)
    conf = yaml.safe_load((ROOT / "conf" / "espnet" / "feats.yaml").read_text())
    conf["encoder"] = "no_such_encoder"
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(conf))
    exp = tmp_path / "exp" / "x"
    r = _run(["train", "--config", str(config), "--task", "speech_four", "--data_dir", str(data),
              "--feats_dir", str(feats), "--exp_dir", str(exp)], tmp_path)
    assert r.returncode == 1
    assert "ESPnet collect-stats failed (exit 1); its log is " + str(exp / "train.log") in r.stderr
    assert "no_such_encoder" in r.stderr and not (exp / "done").exists()


def _fake_espnet_run(args) -> list[str]:
    """In place of an ESPnet run: its output dir with what cls_train leaves for scoring; the arguments."""
    args = [str(a) for a in args]
    out = Path(args[args.index("--output_dir") + 1])
    out.mkdir(parents=True, exist_ok=True)
    if args[0] == "espnet2.bin.cls_train" and "--collect_stats" not in args:
        (out / "config.yaml").write_text(yaml.safe_dump({"best_model_criterion": [["valid", "acc", "max"]]}))
        (out / "valid.acc.best.pth").write_text("")
    if args[0] == "espnet2.bin.cls_inference":   # every utterance: the first class, certain
        exp = Path(args[args.index("--classification_train_config") + 1]).parent
        n = len((exp / "data" / "token_list").read_text().split()) - 1
        scp = Path(args[args.index("--data_path_and_name_and_type") + 1].split(",")[0])
        (out / "prediction").mkdir()
        (out / "prediction" / "score").write_text("".join(
            f"{line.split()[0]} {' '.join(['1'] + ['0'] * (n - 1))}\n" for line in scp.read_text().splitlines()))
    return args


def test_train_command_line(tmp_path, monkeypatch):
    """What train() asks of ESPnet (runs recorded, not executed): shapes from collect-stats, global_mvn stats,
    --resume, and one-node DDP for --ngpu 2."""
    data, feats = _tiny_corpus(tmp_path)
    calls = []
    monkeypatch.setattr(eb, "run_espnet", lambda args, *_, **__: calls.append(_fake_espnet_run(args)))
    exp = tmp_path / "exp" / "e"
    eb.train(ROOT / "conf" / "espnet" / "feats.yaml", "speech_four", 3, data, feats, exp, ngpu=2)
    stats, _, training = calls
    assert stats[stats.index("--normalize") + 1] == "none" and "--collect_stats" in stats
    assert training[training.index("--seed") + 1] == "3" and training[training.index("--input_size") + 1] == "8"
    assert training[training.index("--resume") + 1] == "true"
    assert training[training.index("--ngpu") + 1] == "2"
    assert training[training.index("--multiprocessing_distributed") + 1] == "true"
    assert training[training.index("--dist_world_size") + 1] == "1"          # nodes, in that mode
    assert f"stats_file={exp}/stats/train/feats_stats.npz" in training
    assert f"{exp}/stats/train/speech_shape" in training and f"{exp}/stats/valid/label_shape" in training
    assert (exp / "done").read_text().strip() == "valid.acc.best.pth"


def test_custom_tasks_conf_reaches_the_espnet_job(tmp_path, monkeypatch):
    """--backend espnet --tasks_conf COPY: the planned line carries the copy, the job reads its task (a name
    the default conf/tasks.yaml lacks) and records the copy for scoring."""
    from etser.launch import plan, run

    data, feats = _tiny_corpus(tmp_path)
    copy = tmp_path / "my_tasks.yaml"
    copy.write_text("tasks:\n  speech_three: {label_file: utt2emo_audio, kind: classes, classes: [neutral, happy, sad],"
                    " labels: [neutral, happy, sad, angry, fearful], title: Speech(Three)}\n"
                    "defaults: {speech: [speech_three]}\n")
    (tmp_path / "conf" / "espnet").mkdir(parents=True)
    shutil.copy(ROOT / "conf" / "espnet" / "feats.yaml", tmp_path / "conf" / "espnet" / "feats.yaml")
    monkeypatch.chdir(tmp_path)
    jobs = tmp_path / "exp" / "train_jobs.txt"
    assert plan.main(["train", "--backend", "espnet", "--feats_dirs", str(feats), "--heads", "feats", "--seeds", "1",
                      "--tasks", "speech_three", "--tasks_conf", str(copy), "--data_dir", str(data),
                      "--out", str(jobs)]) == 0
    line = jobs.read_text().splitlines()[-1]
    assert f"--tasks_conf {copy}" in line
    monkeypatch.setattr(eb, "run_espnet", lambda args, *_, **__: _fake_espnet_run(args))
    monkeypatch.setattr(eb, "check_espnet", lambda: eb.REQUIRED_ESPNET)
    assert run.main(["--job_list", str(jobs), "--job", "1", "--num_jobs", "1"]) == 0
    exp = tmp_path / "exp" / "tiny_0000" / "espnet_feats" / "speech_three" / "seed1"
    assert (exp / "data" / "token_list").read_text().split() == ["neutral", "happy", "sad", "<unk>"]
    assert len((exp / "data" / "train" / "text").read_text().splitlines()) == 36   # angry and fearful left out
    assert json.loads((exp / "backend.json").read_text())["tasks_conf"] == str(copy)
    # scoring reads the task from the copy the training recorded
    (exp / "config.yaml").write_text(yaml.safe_dump({"best_model_criterion": [["valid", "acc", "max"]]}))
    score_jobs = tmp_path / "exp" / "score_jobs.txt"
    assert plan.main(["score", "--backend", "espnet", "--feats_dirs", str(feats), "--heads", "feats", "--seeds", "1",
                      "--tasks", "speech_three", "--tasks_conf", str(copy), "--data_dir", str(data),
                      "--sets", "train val test", "--out", str(score_jobs)]) == 0
    assert run.main(["--job_list", str(score_jobs)]) == 0
    m = json.loads((exp / "decode_test" / "metrics.json").read_text())
    assert m["task"] == "speech_three" and m["classes"] == ["neutral", "happy", "sad"] and m["num_utts"] == 12


@pytest.mark.parametrize("name", ["hubert_frozen", "hubert_finetune"])
def test_missing_checkpoint_stops_before_espnet(tmp_path, monkeypatch, name):
    data, feats = _tiny_corpus(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(eb, "run_espnet", lambda *a, **k: pytest.fail("ESPnet must not run"))
    with pytest.raises(eb.EspnetError, match="needs its checkpoint downloads/models/chinese-hubert-base"):
        eb.train(ROOT / "conf" / "espnet" / f"{name}.yaml", "speech_four", 1, data, feats, tmp_path / "exp")


@pytest.mark.parametrize("name", ["hubert_frozen", "hubert_finetune", "fbank_frozen"])
def test_frontend_configs_build_in_espnet(tmp_path, name):
    """Each audio config builds ESPnet's cls model (HuBERT from a tiny random Hugging Face dir in place of the
    real checkpoint), and its freeze_param prefixes name real parameters (ESPnet ignores ones that do not)."""
    from helpers_models import tiny_hf_dir

    conf = yaml.safe_load((ROOT / "conf" / "espnet" / f"{name}.yaml").read_text())
    if "path_or_url" in conf["frontend_conf"]["frontend_conf"]:
        conf["frontend_conf"]["frontend_conf"]["path_or_url"] = str(tiny_hf_dir(tmp_path / "hf", "hubert"))
    conf["frontend_conf"]["download_dir"] = str(tmp_path / "hub")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(conf))
    (tmp_path / "tokens").write_text("neutral\nhappy\nsad\nangry\n<unk>\n")
    code = f"""
import sys
from espnet2.tasks.cls import CLSTask
args = CLSTask.get_parser().parse_args(["--config", "{config}", "--token_list", "{tmp_path / 'tokens'}",
    "--normalize", "none", "--output_dir", "{tmp_path / 'out'}"])
model = CLSTask.build_model(args)
names = [n for n, _ in model.named_parameters()]
for prefix in args.freeze_param:
    hit = [n for n in names if n.startswith(prefix + ".")]
    print(prefix, len(hit), sum(1 for n in names if not n.startswith(prefix + ".")))
print("classes", model.decoder.linear_out.out_features)
"""
    out = subprocess.run([PY, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'local'}:{ROOT / 'tests'}"})
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.split("\n")
    assert "classes 4" in lines
    for prefix in conf["freeze_param"]:
        frozen, trained = next(ln.split()[1:] for ln in lines if ln.startswith(prefix + " "))
        assert int(trained) > 0 and (int(frozen) > 0 or name == "fbank_frozen"), (prefix, frozen, trained)


def test_unreadable_checkpoint_is_dropped_before_resume(tmp_path, monkeypatch, caplog):
    """A checkpoint.pth cut short by a kill during ESPnet's save: removed with the killed run's epoch files, and
    the training restarts; a readable one is kept for --resume."""
    import torch

    exp = tmp_path / "exp"
    (exp / "tensorboard").mkdir(parents=True)
    (exp / "checkpoint.pth").write_bytes(b"PK\x03\x04 cut short")
    (exp / "2epoch.pth").write_bytes(b"x")
    (exp / "valid.acc.best.pth").symlink_to("2epoch.pth")
    (exp / "train.log").write_text("kept\n")
    with caplog.at_level("WARNING"):
        assert eb.drop_unreadable_checkpoint(exp)
    assert sorted(p.name for p in exp.iterdir()) == ["train.log"]
    assert f"{exp / 'checkpoint.pth'} cannot be read" in caplog.text and "2 epoch file(s)" in caplog.text
    torch.save({"model": {}, "reporter": {}, "optimizers": [], "schedulers": []}, exp / "checkpoint.pth")
    assert not eb.drop_unreadable_checkpoint(exp) and (exp / "checkpoint.pth").is_file()
    assert not eb.drop_unreadable_checkpoint(tmp_path / "none")
