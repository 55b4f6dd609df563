"""Models as plugins: a fusion algorithm is one file and one YAML.  A copy of an existing algorithm's file and
config under a new name, in a copy of the package with nothing else changed, trains and is scored."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from etser import models
from test_fusion_recipe import make_fusion_corpus

ROOT = Path(__file__).resolve().parents[1]


def test_every_family_lists_what_registers_and_unknown_names_fail():
    for family in models.FAMILIES:
        assert models.names(family), family
        try:
            models.get(family, "no_such_model")
        except ValueError as e:
            assert "no_such_model" in str(e) and models.names(family)[0] in str(e)
        else:
            raise AssertionError(family)


def test_a_copied_fusion_algorithm_trains_and_scores_under_its_new_name(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "etser", repo / "etser", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "conf", repo / "conf")
    shutil.copyfile(ROOT / "etser" / "models" / "fusion" / "tfn.py", repo / "etser" / "models" / "fusion" / "tfn_copy.py")
    shutil.copyfile(ROOT / "conf" / "fusion" / "tfn.yaml", repo / "conf" / "fusion" / "tfn_copy.yaml")
    data, dumps = make_fusion_corpus(tmp_path / "corpus", sizes={"train": 32, "val": 12, "test": 12})
    env = {**os.environ, "PYTHONPATH": str(repo)}
    exp = tmp_path / "exp" / "fusion" / "tfn_copy" / "multi_four" / "seed1"
    train = [sys.executable, "-m", "etser.learn.train", "--config", "conf/train/fusion.yaml", "--task", "multi_four",
             "--data_dir", str(data), "--fusion_streams", " ".join(f"{m}={d}" for m, d in dumps.items()),
             "--exp_dir", str(exp), "--conf", "head_conf.algo=tfn_copy", "--conf", "max_epochs=2",
             "--conf", "batch_size=16"]
    r = subprocess.run(train, cwd=repo, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run([sys.executable, "-m", "etser.learn.score", str(exp), "--sets", "test"], cwd=repo, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((exp / "decode_test" / "metrics.json").read_text())
    assert m["algo"] == "tfn_copy" and m["fusion_level"] == "utterance" and m["num_utts"] == 12
    assert (exp / "decode_test" / "missing.json").is_file()   # scored with modalities kept out, as any fusion model
