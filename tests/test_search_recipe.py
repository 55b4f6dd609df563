"""The random search through ./run.sh (one upstream, one task, the paper head on a quarter mini corpus): stage 3 trains
the draws from its first job file and the K runs of the chosen draw from its second, stage 4 scores the runs
(never the draws) and RESULTS.md marks the searched row."""

from __future__ import annotations

import json
import re

import yaml

from tests.helpers_faults import make_workdir, run_recipe


def test_search_trials_3_runs_2(tmp_path, small_release):
    w = make_workdir(tmp_path / "work")   # the committed conf/train/paper.yaml: 100 epochs, no early stop
    r = run_recipe(w, "--db_root", small_release, "--upstreams", "fbank_no_cmvn", "--heads", "paper",
                   "--tasks", "speech_four", "--fusion", "", "--search_trials", "3", "--search_runs", "2",
                   "--search_seed", "5", "--nj", "2")
    assert r.returncode == 0, r.stderr[-4000:]
    # the draws: one line each of the first job file; the runs: the second job file, after them
    assert re.search(r"Stage 3: 3 runs of \S*exp/train_jobs.txt in 2 jobs", r.stderr), r.stderr[-3000:]
    assert re.search(r"Stage 3: 2 runs of \S*exp/search_train_jobs.txt", r.stderr), r.stderr[-3000:]
    assert r.stderr.index("exp/train_jobs.txt in") < r.stderr.index("exp/search_train_jobs.txt in")
    (row,) = (w / "exp").glob("fbank_no_cmvn_*/paper/speech_four")
    sel = json.loads((row / "search" / "selection.json").read_text())
    assert sel["draws"] == 3 and sel["runs"] == 2 and sel["search_seed"] == 5 and sel["metric"] == "weighted_f1"
    vals = [r["val"]["weighted_f1"] for r in sel["records"]]
    assert sel["best_draw"] == vals.index(max(vals)) + 1
    for k in (1, 2, 3):
        assert not (row / "search" / f"draw{k}" / "decode_test").exists()   # a draw is never scored on test
    for s in (1, 2):
        conf = yaml.safe_load((row / f"seed{s}" / "config.yaml").read_text())
        assert conf["search_draw"] == sel["best_draw"] and conf["search_values"] == sel["best_values"]
        assert (row / f"seed{s}" / "decode_test" / "metrics.json").is_file()
    assert not (row / "seed3").exists()
    results = (w / "exp" / "RESULTS.md").read_text()
    assert f"- `{row.relative_to(w)}`: 3 draws, 2 runs; draw {sel['best_draw']} chosen on val weighted_f1" in results
    assert "| fbank_no_cmvn" in results
