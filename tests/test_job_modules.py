"""The job-module protocol: each job module has build_parser() and run_line(args, argv, cache), which raises
on a failed run (the one runner goes on with the other lines and exits 1 naming them)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

JOB_MODULES = ("etser.learn.train", "etser.learn.score", "etser.caption.train", "etser.caption.score")


@pytest.mark.parametrize("name", JOB_MODULES)
def test_job_module_protocol(name, tmp_path):
    mod = importlib.import_module(name)
    ap = mod.build_parser()
    missing = tmp_path / "no_such_exp"
    argv = {"etser.learn.train": ["--config", "conf/train/superb.yaml", "--task", "speech_four", "--feats_dir",
                            str(missing), "--exp_dir", str(missing)],
            "etser.learn.score": [str(missing), "--sets", "test"],
            "etser.caption.train": ["--config", str(Path("conf/caption/transformer.yaml")), "--kind", "style",
                                    "--feats_dir", str(missing), "--exp_dir", str(missing)],
            "etser.caption.score": ["--exp_dir", str(missing), "--sets", "test", "--feats_dir", str(missing)]}[name]
    with pytest.raises((FileNotFoundError, RuntimeError, ValueError)):
        mod.run_line(ap.parse_args(argv), argv, {})
