"""`./run.sh --backend espnet` end to end on the quarter-size mini corpus: locally beside our backend (with a
kill -9 during ESPnet training and a rerun that resumes through ESPnet's --resume), through the live Slurm
(skipped without sbatch, required in CI with ETSER_REQUIRE_SLURM=1), and a failing ESPnet job naming its log.

One prepared working directory (stages 1-2, fbank_no_cmvn) is shared by all tests.  The ESPnet head is
conf/espnet/fbank_frozen.yaml with 4 epochs and 2-best averaging (`quick`, written into the test's conf/espnet/
beside the shipped configs): each ESPnet process spends 10-35 s importing, so the runs are counted, not
the epochs.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from tests.helpers_faults import FAST, ROOT, kill_run, recipe_env, run_recipe, start_recipe, wait_until
from tests.helpers_slurm import require_slurm

ESPNET = ("--backend", "espnet", "--heads", "quick")
EXP_GLOB = "exp/fbank_no_cmvn_*/espnet_quick/speech_four/seed1"


def _workdir(path: Path) -> Path:
    """Links to this checkout's recipe like egs/emotiontalk/, except conf/espnet/: the shipped configs plus
    `quick` (fbank_frozen, fewer epochs) and `broken` (an encoder ESPnet does not have)."""
    path.mkdir(parents=True)
    for name in ("run.sh", "path.sh", "cmd.sh", "local", "utils"):
        (path / name).symlink_to(ROOT / name)
    conf = path / "conf"
    conf.mkdir()
    for p in (ROOT / "conf").iterdir():
        if p.name != "espnet":
            (conf / p.name).symlink_to(p)
    (conf / "espnet").mkdir()
    for p in (ROOT / "conf" / "espnet").glob("*.yaml"):
        (conf / "espnet" / p.name).symlink_to(p)
    quick = yaml.safe_load((ROOT / "conf" / "espnet" / "fbank_frozen.yaml").read_text())
    quick.update(max_epoch=4, keep_nbest_models=2, patience=None, batch_size=8)
    (conf / "espnet" / "quick.yaml").write_text(yaml.safe_dump(quick, sort_keys=False))
    (conf / "espnet" / "broken.yaml").write_text(yaml.safe_dump({**quick, "encoder": "no_such_encoder"}))
    return path


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, small_release) -> Path:
    """Stages 1-2 (fbank_no_cmvn) and our backend's stages 3-5, once for the module."""
    w = _workdir(tmp_path_factory.mktemp("espnet_recipe") / "w")
    r = run_recipe(w, "--db_root", small_release, *FAST)
    assert r.returncode == 0, r.stderr[-4000:]
    return w


def _copy_prepared(prepared: Path, dest: Path) -> Path:
    """A second working directory with the prepared data/ and dump/ (scp paths are relative to it)."""
    w = _workdir(dest)
    for d in ("data", "dump"):
        shutil.copytree(prepared / d, w / d, symlinks=True)
    return w


def _check_espnet_row(w: Path) -> dict:
    (exp,) = w.glob(EXP_GLOB)
    # ESPnet's own layout, written by ESPnet
    for name in ("config.yaml", "valid.acc.best.pth", "valid.acc.ave_2best.pth", "valid.acc.ave.pth",
                 "checkpoint.pth", "done"):
        assert (exp / name).exists(), f"{exp}/{name} missing"
    assert any((exp / "tensorboard").rglob("events.out.tfevents.*"))
    m = json.loads((exp / "decode_test" / "metrics.json").read_text())
    assert m["backend"] == "espnet" and m["head"] == "espnet_quick" and m["model"] == "valid.acc.ave.pth"
    assert m["num_utts"] == len((exp / "data" / "test" / "text").read_text().splitlines()) > 0
    # chance is 25 % (four classes); 4 epochs on the quarter-size corpus: measured 50 % UA (15 test utterances)
    assert m["ua"] > 0.35, m
    results = (w / "exp" / "RESULTS.md").read_text()
    rows = [line for line in results.splitlines() if line.startswith("| fbank_no_cmvn")]
    assert any("| espnet_quick |" in r for r in rows), results
    assert f"{100 * m['ua']:.2f}" in results
    return m


def test_local_run_beside_ours_killed_and_resumed(prepared):
    w = prepared
    p = start_recipe(w, *FAST, *ESPNET, "--stage", "3")
    # kill -9 of the whole run once ESPnet has saved epoch 1 (checkpoint.pth) and started epoch 2
    def in_epoch2() -> bool:
        logs = [e / "train.log" for e in w.glob(EXP_GLOB) if (e / "checkpoint.pth").is_file()]
        return any("2/4epoch started" in log.read_text() for log in logs)

    wait_until(in_epoch2, p, "ESPnet's second epoch", timeout=600, poll=0.2)
    kill_run(p)
    (exp,) = w.glob(EXP_GLOB)
    assert not (exp / "done").exists() and (exp / "stats" / "done").is_file()

    r = run_recipe(w, *FAST, *ESPNET, "--stage", "3")
    assert r.returncode == 0, r.stderr[-4000:]
    log = (exp / "train.log").read_text()
    runs = [line for line in log.splitlines() if line.startswith("# ") and " -m espnet2.bin." in line]
    # collect-stats once (the rerun kept it), the killed training, the resumed one
    assert [("collect" if "--collect_stats true" in r else r.split(" -m ")[1].split()[0]) for r in runs] == [
        "collect", "espnet2.bin.aggregate_stats_dirs", "espnet2.bin.cls_train", "espnet2.bin.cls_train"]
    assert log.count("# (the run above ended without an exit status: killed") == 1
    assert f"The training was resumed using {exp.relative_to(w)}/checkpoint.pth" in log
    assert log.count("1epoch results") == 1 and log.count("4epoch results") == 1   # epoch 1 not trained again
    m = _check_espnet_row(w)
    # our row beside ESPnet's, same upstream tag, same test utterances
    (ours,) = w.glob("exp/fbank_no_cmvn_*/superb/speech_four/seed1/decode_test/metrics.json")
    assert json.loads(ours.read_text())["num_utts"] == m["num_utts"]
    assert "| superb |" in (w / "exp" / "RESULTS.md").read_text()


def test_failing_espnet_job_names_its_log(prepared):
    r = run_recipe(prepared, *FAST, "--backend", "espnet", "--heads", "broken", "--stage", "3", "--stop_stage", "3")
    assert r.returncode != 0
    assert "exp/log/train.1.log" in r.stderr, r.stderr[-3000:]
    (exp,) = prepared.glob("exp/fbank_no_cmvn_*/espnet_broken/speech_four/seed1")
    assert re.search(rf"ESPnet collect-stats failed \(exit \d+\); its log is {re.escape(str(exp.relative_to(prepared)))}/train.log",
                     r.stderr), r.stderr[-3000:]
    assert "no_such_encoder" in (exp / "train.log").read_text()
    assert not (exp / "done").exists()


def test_slurm_run(prepared, tmp_path):
    require_slurm()
    w = _copy_prepared(prepared, tmp_path / "w")
    r = run_recipe(w, *FAST, *ESPNET, "--stage", "3", "--cmd_backend", "slurm",
                   env=recipe_env(cmd_backend="slurm"))
    assert r.returncode == 0, r.stderr[-4000:]
    assert re.search(r"slurm\.py: job \d+: 1 task done", r.stderr), r.stderr[-3000:]
    _check_espnet_row(w)
