"""Checkpoints are written by one writer that reports a full disk plainly and leaves no temporary file, and
are read as data: a checkpoint holding code is refused, naming the file, without running it."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch

import etser.learn.checkpoint
from etser.learn import checkpoint, train
from tests.helpers_disk import full_disk_after
from tests.helpers_feats import make_corpus

ROOT = Path(__file__).resolve().parents[1]


class _Payload:
    """Unpickling this runs os.system: what a checkpoint from someone else's exp dir could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


@pytest.mark.parametrize("reader", ["load_epoch", "load_best"])
def test_checkpoint_with_code_is_refused_named_and_not_run(tmp_path, reader):
    marker = tmp_path / "ran"
    exp = tmp_path / "exp"
    (exp / "checkpoints").mkdir(parents=True)
    path = exp / "checkpoints" / "epoch1.pt" if reader == "load_epoch" else exp / "best.pt"
    torch.save({"model": {}, "epoch": 1, "info": _Payload(marker)}, path)
    with pytest.raises(ValueError, match=rf"{path}: refused: a checkpoint must hold only tensors and plain "
                                         r"data, this one holds more \(Trying to load unsupported GLOBAL "
                                         r"posix.system"):
        checkpoint.load_epoch(path) if reader == "load_epoch" else checkpoint.load_best(exp)
    assert not marker.exists(), "the checkpoint's code ran"


def test_full_disk_names_the_dir_and_leaves_no_tmp(tmp_path, monkeypatch):
    full_disk_after(monkeypatch, etser.learn.checkpoint, 0)
    path = tmp_path / "best.pt"
    with pytest.raises(OSError, match=rf"no space left on {tmp_path} writing {path}") as e:
        checkpoint.atomic_save({"model": {"w": torch.zeros(1000)}}, path)
    assert e.value.errno == errno.ENOSPC
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "best.pt"
    checkpoint.atomic_save({"epoch": 1}, path)
    full_disk_after(monkeypatch, etser.learn.checkpoint, 0)
    with pytest.raises(OSError, match="no space left on"):
        checkpoint.atomic_save({"epoch": 2}, path)
    assert checkpoint.read_checkpoint(path) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]


def test_trained_checkpoints_are_plain_data(tmp_path):
    """What training writes (best.pt, the epoch checkpoints with optimizer and RNG states) reads back with
    weights_only: the safe reader refuses none of the recipe's own files."""
    data_dir, feats_dir = make_corpus(tmp_path / "c", {"train": 28, "val": 14, "test": 14}, num_layers=2, dim=4,
                                      frame_layers=(1,))
    exp = tmp_path / "exp"
    argv = ["--config", str(ROOT / "conf" / "train" / "superb.yaml"), "--task", "speech_four", "--seed", "1",
            "--data_dir", str(data_dir), "--feats_dir", str(feats_dir), "--exp_dir", str(exp),
            "--conf", "max_epochs=2"]
    assert train.main(argv) == 0
    for _, p in checkpoint.list_epochs(exp):
        assert checkpoint.load_epoch(p)["state"]["epoch"] >= 1
    model, info = checkpoint.load_best(exp)
    assert info["epoch"] >= 1


def test_espnet_checkpoint_probe_runs_no_code(tmp_path):
    """The check that an ESPnet checkpoint.pth is whole (before --resume) reads it as data: a pickle with
    code is neither run nor taken for a file cut short (ESPnet's own resume decides about it)."""
    from etser import espnet_backend

    marker = tmp_path / "ran"
    exp = tmp_path / "exp"
    exp.mkdir()
    torch.save({"model": {}, "reporter": _Payload(marker), "optimizers": []}, exp / "checkpoint.pth")
    assert not espnet_backend.drop_unreadable_checkpoint(exp)
    assert not marker.exists(), "the checkpoint's code ran"
    assert (exp / "checkpoint.pth").is_file()
