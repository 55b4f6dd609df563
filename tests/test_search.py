"""Random search as stage-3 job lines (etser.learn.search, etser.launch.plan): one draw per line, deterministic
for a seed, resumable, selected on val only, then K runs of the chosen draw; no search plans today's lines."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from etser.launch import plan
from etser.launch.run import main as run_jobs
from etser.learn import search
from etser.runtime import read_job_list
from tests.helpers_feats import make_corpus, make_frames, write_dump

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    data_dir, feats_dir = make_corpus(root, sizes={"train": 40, "val": 16, "test": 16})
    return root, data_dir, feats_dir


def _plan(root, data_dir, feats_dir, out, *extra):
    args = ["train", "--feats_dirs", str(feats_dir), "--heads", "superb paper", "--tasks", "speech_four",
            "--seeds", "1 2", "--data_dir", str(data_dir), "--exp_root", str(root / "exp"), "--out", str(out), *extra]
    return plan.main(args)


def _lines(path):
    return read_job_list(path)


def _conf_items(line):
    return [line[i + 1] for i, x in enumerate(line) if x == "--conf"]


def test_no_search_plans_todays_lines(corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    root, data_dir, feats_dir = corpus
    assert _plan(root, data_dir, feats_dir, tmp_path / "a.txt") == 0
    assert _plan(root, data_dir, feats_dir, tmp_path / "b.txt", "--search_trials", "0", "--search_runs", "4") == 0
    assert (tmp_path / "a.txt").read_text() == (tmp_path / "b.txt").read_text()
    assert all(not _conf_items(x) for x in _lines(tmp_path / "a.txt"))


def test_each_draw_is_its_own_line_and_deterministic(corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    root, data_dir, feats_dir = corpus
    for name in ("a.txt", "b.txt"):
        assert _plan(root, data_dir, feats_dir, tmp_path / name, "--search_trials", "5", "--search_seed", "3") == 0
    assert (tmp_path / "a.txt").read_text() == (tmp_path / "b.txt").read_text()
    lines = _lines(tmp_path / "a.txt")
    paper = [x for x in lines if x[x.index("--config") + 1] == "conf/train/paper.yaml"]
    superb = [x for x in lines if x[x.index("--config") + 1] == "conf/train/superb.yaml"]
    row = f"{root}/exp/{feats_dir.name}/paper/speech_four"
    # the paper head has tune lists: its seeds are replaced by 5 draws, one line each; superb has none: as today
    assert [x[x.index("--exp_dir") + 1] for x in paper] == [f"{row}/search/draw{k}" for k in range(1, 6)]
    assert [_conf_items(x) for x in paper] == [[f"search_draw={k}", "search_seed=3"] for k in range(1, 6)]
    assert [x[x.index("--exp_dir") + 1].rsplit("/", 1)[1] for x in superb] == ["seed1", "seed2"]
    # one line per job: the draws spread over as many jobs as --nj allows
    header = (tmp_path / "a.txt").read_text().splitlines()[:2]
    assert header[1] == "# runs_per_job: 1"
    # a draw is the same configuration whatever the number of draws
    assert _plan(root, data_dir, feats_dir, tmp_path / "c.txt", "--search_trials", "2", "--search_seed", "3") == 0
    assert [x for x in _lines(tmp_path / "c.txt") if "conf/train/paper.yaml" in x] == paper[:2]


def _fake_draw(row, k, val, test, seed=0, metric="weighted_f1"):
    d = Path(search.draw_dir(row, k))
    (d / "decode_test").mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump({"search_draw": k, "search_seed": seed,
                                                   "search_values": {"optim_conf.lr": k}}))
    (d / "done").write_text(json.dumps({"val_metrics": {metric: val, "ua": 0.0}, "select_metric": metric}))
    # a test figure that would pick another draw if the selection ever read it
    (d / "decode_test" / "metrics.json").write_text(json.dumps({metric: test}))


def test_selection_reads_val_only_ties_to_the_earlier_draw(tmp_path):
    row = tmp_path / "exp" / "tag" / "paper" / "speech_four"
    for k, (val, test) in enumerate([(0.3, 0.9), (0.6, 0.1), (0.6, 0.2), (0.5, 1.0)], start=1):
        _fake_draw(row, k, val, test)
    doc = search.select(row, 4, 0, 6)
    assert doc["best_draw"] == 2 and doc["metric"] == "weighted_f1" and doc["mode"] == "max"
    assert [r["val"]["weighted_f1"] for r in doc["records"]] == [0.3, 0.6, 0.6, 0.5]
    assert doc["records"][1]["values"] == {"optim_conf.lr": 2}
    assert all(set(r) == {"draw", "exp_dir", "values", "val"} for r in doc["records"])   # no test figure
    assert search.read_selection(row) == doc
    assert search.select(row, 4, 0, 6, lower_is_better=("weighted_f1",))["best_draw"] == 1
    # a draw made with another search seed is stale, not selected
    with pytest.raises(ValueError, match="draw1: trained as draw 1 of search seed 0, not draw 1 of seed 9"):
        search.select(row, 4, 9, 6)
    with pytest.raises(ValueError, match=r"1 of 5 search draw\(s\) .* not finished \(no .*draw5/done\)"):
        search.select(row, 5, 0, 6)


def test_search_trains_draws_then_k_runs_of_the_chosen_one(corpus, tmp_path, monkeypatch):
    """Draw lines run through the one runner; phase 2 is refused until every draw is done; a rerun skips the
    finished draws; the K runs carry the chosen draw's configuration with seeds 1..K."""
    monkeypatch.chdir(ROOT)
    root, data_dir, feats_dir = corpus
    exp = tmp_path / "exp"
    opts = ["--search_trials", "3", "--search_runs", "2", "--search_seed", "1"]

    def plan_(out, *extra):
        return plan.main(["train", "--feats_dirs", str(feats_dir), "--heads", "paper", "--tasks", "speech_four",
                          "--seeds", "7", "--data_dir", str(data_dir), "--exp_root", str(exp), "--out", str(out),
                          *opts, *extra])

    jobs = tmp_path / "train_jobs.txt"
    assert plan_(jobs) == 0
    small = ["--conf", "max_epochs=2"]
    text = jobs.read_text().splitlines()
    jobs.write_text("\n".join(text[:2] + [x + " " + shlex.join(small) for x in text[2:]]) + "\n")
    # "killed" after job 1 of 3: draw 1 done, draws 2 and 3 not started
    assert run_jobs(["--job_list", str(jobs), "--job", "1", "--num_jobs", "3"]) == 0
    row = exp / feats_dir.name / "paper" / "speech_four"
    assert (row / "search" / "draw1" / "done").is_file() and not (row / "search" / "draw2").exists()
    assert plan_(tmp_path / "search_jobs.txt", "--search_phase", "runs") == 1   # refused: draws 2, 3 unfinished
    done1 = (row / "search" / "draw1" / "done").stat().st_mtime_ns
    assert run_jobs(["--job_list", str(jobs), "--job", "1", "--num_jobs", "1"]) == 0
    assert (row / "search" / "draw1" / "done").stat().st_mtime_ns == done1   # finished draw not retrained
    assert plan_(tmp_path / "search_jobs.txt", "--search_phase", "runs") == 0
    sel = search.read_selection(row)
    vals = [json.loads((row / "search" / f"draw{k}" / "done").read_text())["val_metrics"]["weighted_f1"]
            for k in (1, 2, 3)]
    assert sel["best_draw"] == vals.index(max(vals)) + 1 and sel["draws"] == 3 and sel["runs"] == 2
    lines = _lines(tmp_path / "search_jobs.txt")
    assert [x[x.index("--exp_dir") + 1] for x in lines] == [str(row / "seed1"), str(row / "seed2")]
    assert [x[x.index("--seed") + 1] for x in lines] == ["1", "2"]
    assert all(_conf_items(x) == [f"search_draw={sel['best_draw']}", "search_seed=1"] for x in lines)
    body = (tmp_path / "search_jobs.txt").read_text().splitlines()
    (tmp_path / "search_jobs.txt").write_text("\n".join(body[:2] + [x + " " + shlex.join(small) for x in body[2:]])
                                              + "\n")
    assert run_jobs(["--job_list", str(tmp_path / "search_jobs.txt"), "--job", "1", "--num_jobs", "1"]) == 0
    chosen = yaml.safe_load((row / "search" / f"draw{sel['best_draw']}" / "config.yaml").read_text())
    for s in (1, 2):
        conf = yaml.safe_load((row / f"seed{s}" / "config.yaml").read_text())
        assert conf["seed"] == s and conf["search_values"] == chosen["search_values"] == sel["best_values"]
        assert conf["head_conf"] == chosen["head_conf"] and conf["optim_conf"] == chosen["optim_conf"]
    # stage 4 scores the K runs of the searched row, never its draws
    assert plan.main(["score", "--feats_dirs", str(feats_dir), "--heads", "paper", "--tasks", "speech_four",
                      "--seeds", "7", "--data_dir", str(data_dir), "--exp_root", str(exp),
                      "--out", str(tmp_path / "score_jobs.txt"), *opts, "--check_trained", "true"]) == 0
    assert [x[-1] for x in _lines(tmp_path / "score_jobs.txt")] == [str(row / "seed1"), str(row / "seed2")]


def test_run_sh_search_options_are_checked_and_the_old_names_are_aliases():
    """Refused before anything runs (the checks precede the environment set-up)."""
    r = subprocess.run(["./run.sh", "--fusion_trials", "abc", "--search_runs", "0", "--fusion_search_seed", "x"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "--search_runs 0 (a positive integer)" in r.stderr and "--search_trials abc (0 or a positive" in r.stderr
    assert "--search_seed x (0 or a positive integer)" in r.stderr


def test_fusion_rows_are_searched_by_the_same_plan(tmp_path, monkeypatch):
    """A fusion algorithm's row gets draw lines of its conf/fusion lists (no in-job search any more)."""
    import numpy as np

    monkeypatch.chdir(ROOT)
    rng = np.random.default_rng(0)
    frames = {f"S01-u{i}": make_frames(rng, i % 4, 2, 4) for i in range(4)}
    write_dump(tmp_path / "dump" / "sp_1234" / "train", frames, None)
    write_dump(tmp_path / "dump" / "tx_5678" / "train", frames, None, modality="text")
    streams = f"speech={tmp_path}/dump/sp_1234 text={tmp_path}/dump/tx_5678"
    out = tmp_path / "fusion_train_jobs.txt"
    assert plan.main(["fusion_train", "--fusion_streams", streams, "--algos", "attention lmf", "--tasks", "multi_four",
                      "--seeds", "1 2", "--exp_root", "exp", "--search_trials", "2", "--search_seed", "4",
                      "--out", str(out)]) == 0
    lines = _lines(out)
    row = "exp/fusion_sp_1234+tx_5678/{}/multi_four"
    assert [x[x.index("--exp_dir") + 1] for x in lines] == [search.draw_dir(row.format(a), k)
                                                            for a in ("attention", "lmf") for k in (1, 2)]
    assert all(_conf_items(x)[-2:] == [f"search_draw={k}", "search_seed=4"] for x, k in zip(lines, (1, 2, 1, 2)))
