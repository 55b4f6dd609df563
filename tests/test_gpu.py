"""The CUDA paths (--ngpu uses CUDA, optional fp16/bf16 autocast); skipped without a GPU.

- stage 2 on device "cuda" gives the CPU's pooled statistics and frames of tiny random models of the three
  model routes (S3PRL hubert_local, S3PRL hf_hubert_custom, the Whisper encoder factory);
- with ``autocast: bf16`` and ``autocast: fp16`` it completes and stays near the CPU's float32 features;
- ``./run.sh --ngpu 1`` runs stages 1-4 on the GPU: features, training and scoring.

Differences are relative Frobenius norms over all utterances (``rel`` of test_extract).  float32 on CUDA
is not bit-equal to the CPU (other kernels, sums in another order).  Every measured figure is printed
(pytest -s shows them).  Measured on an H200 (torch 2.11, CUDA 13.0), largest over pooled mean/std and
frames: float32 3.4e-6, fp16 1.4e-3, bf16 1.1e-2 (frames; pooled statistics 5.4e-3).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch
import yaml

from etser.features.extract import merge, run_job
from tests.helpers_faults import FAST, make_workdir, recipe_env, run_recipe
from test_extract import make_data, rel, shipped

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

# float32: other kernels and reordered sums (3.4e-6 measured, 30x margin); a wrong layer, device mix-up or
# lost normalisation is ~1.
FP32_TOL = 1e-4
# half precision for the model, float32 statistics: bf16 keeps 8 mantissa bits, fp16 11 (4x and 7x margin).
AUTOCAST_TOL = {"bf16": 5e-2, "fp16": 1e-2}
MODELS = ("hubert_local", "hubert_base", "whisper_base")
FRAME_LAYERS = {"layers": [0, -1], "dtype": "float32"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Data (6 utterances of 0.5-2.4 s at 16/44.1/48 kHz), tiny models and the CPU features of each."""
    from helpers_models import tiny_hf_dir, tiny_hubert_ckpt, tiny_whisper_dir

    root = tmp_path_factory.mktemp("gpu")
    data = make_data(root, n=6)
    models = {"hubert_base": tiny_hf_dir(root / "hf_hubert", "hubert", "group"),
              "whisper_base": tiny_whisper_dir(root / "whisper"),
              "hubert_local": tiny_hubert_ckpt(root / "hubert.pt", "group")}
    cpu = {name: extract(config(name, models), data, root / "dump" / f"{name}_cpu", ngpu=0) for name in MODELS}
    return root, data, models, cpu


def config(name: str, models: dict, **override) -> dict:
    if name == "hubert_local":
        cfg = {"name": "hubert_local", "ckpt": str(models["hubert_local"]), "frames": FRAME_LAYERS}
        return {**cfg, **override}
    return shipped(name, models, frames=FRAME_LAYERS, **override)


def extract(cfg: dict, data: Path, out: Path, ngpu: int) -> dict:
    """Stage 2 as run.sh runs it (two jobs, then merge); the tables read back, the jobs' markers."""
    out.mkdir(parents=True)
    conf = out / "upstream_conf.yaml"
    conf.write_text(yaml.safe_dump(cfg))
    markers = [run_job(conf, data, out, nj=2, job=j, ngpu=ngpu) for j in (1, 2)]
    meta = merge(conf, data, out, nj=2)
    tables = {k: dict(kaldiio.load_scp_sequential(str(out / f"{k}.scp")))
              for k in ("pooled_mean", "pooled_std", "frames")}
    n2f = dict(line.split() for line in (out / "utt2num_frames").read_text().splitlines())
    return {**tables, "utt2num_frames": n2f, "markers": markers, "meta": meta}


def differences(got: dict, ref: dict) -> dict[str, float]:
    """Relative difference of each table over all utterances (same keys and shapes asserted)."""
    out = {}
    for k in ("pooled_mean", "pooled_std", "frames"):
        assert list(got[k]) == list(ref[k]), k
        for utt in ref[k]:
            assert got[k][utt].dtype == np.float32 and got[k][utt].shape == ref[k][utt].shape, (k, utt)
            assert np.isfinite(got[k][utt]).all(), (k, utt)
        out[k] = rel(np.concatenate([got[k][u].ravel() for u in ref[k]]),
                     np.concatenate([ref[k][u].ravel() for u in ref[k]]))
    assert got["utt2num_frames"] == ref["utt2num_frames"]
    return out


def on_gpu(cfg: dict, data: Path, out: Path) -> dict:
    torch.cuda.reset_peak_memory_stats()
    got = extract(cfg, data, out, ngpu=1)
    assert torch.cuda.max_memory_allocated() > 0, "nothing was allocated on the GPU"
    assert [m["device"] for m in got["markers"]] == ["cuda", "cuda"] and got["meta"]["devices"] == ["cuda"]
    return got


@pytest.mark.parametrize("name", MODELS)
def test_cuda_extraction_equals_cpu(setup, name):
    root, data, models, cpu = setup
    got = on_gpu(config(name, models), data, root / "dump" / f"{name}_cuda")
    diff = differences(got, cpu[name])
    print(f"\n{name} float32 cuda ({torch.cuda.get_device_name()}) vs cpu, relative: "
          + ", ".join(f"{k} {v:.2e}" for k, v in diff.items()))
    assert max(diff.values()) < FP32_TOL, diff


@pytest.mark.parametrize("autocast", ["bf16", "fp16"])
@pytest.mark.parametrize("name", MODELS)
def test_cuda_autocast_close_to_cpu_float32(setup, name, autocast):
    root, data, models, cpu = setup
    got = on_gpu(config(name, models, autocast=autocast), data, root / "dump" / f"{name}_cuda_{autocast}")
    diff = differences(got, cpu[name])
    print(f"\n{name} autocast {autocast} cuda vs float32 cpu, relative: "
          + ", ".join(f"{k} {v:.2e}" for k, v in diff.items()))
    assert max(diff.values()) < AUTOCAST_TOL[autocast], diff


def test_run_sh_ngpu(tmp_path, small_release):
    """Stages 1-4 with --ngpu 1 in a scratch working directory, with this interpreter (and its PYTHONPATH)."""
    work = make_workdir(tmp_path / "work")
    env = recipe_env(ETSER_PYTHON_ENV="system",
                     PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    r = run_recipe(work, "--db_root", small_release, "--stop_stage", 4, *FAST, "--ngpu", 1,
                   "--python", sys.executable, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-6000:]
    [tag] = list((work / "dump").iterdir())
    for s in ("train", "val", "test"):
        assert json.loads((tag / s / "meta.json").read_text())["devices"] == ["cuda"], s
    exp = work / "exp" / tag.name / "superb" / "speech_four" / "seed1"
    device = yaml.safe_load((exp / "config.yaml").read_text())["env"]["device"]
    assert device == f"cuda: {torch.cuda.get_device_name()}"
    for s in ("val", "test"):
        m = json.loads((exp / f"decode_{s}" / "metrics.json").read_text())
        assert m["set"] == s and 0 <= m["ua"] <= 1 and m["num_utts"] > 0
    print(f"\nrun.sh --ngpu 1 on {device}: test UA {m['ua']:.3f} over {m['num_utts']} utts")


def test_cuda_decoding_workers_do_not_change_features(setup, tmp_path):
    """Decoding in 2 worker processes, pinned non-blocking copies: the features of one background thread."""
    root, data, models, cpu = setup
    cfg = config("hubert_base", models)
    got = {}
    for workers in (0, 2):
        out = tmp_path / f"w{workers}"
        run_job(cfg, data, out, nj=1, job=1, ngpu=1, num_workers=workers)
        merge(cfg, data, out, nj=1)
        got[workers] = dict(kaldiio.load_scp_sequential(str(out / "pooled_mean.scp")))
    assert list(got[0]) == list(got[2])
    err = max(rel(got[2][u], got[0][u]) for u in got[0])
    print(f"\nworkers 2 vs 0 on cuda, pooled mean relative difference {err:.1e}")
    assert err < 1e-6


def test_run_py_two_jobs_on_one_gpu(setup, tmp_path):
    """--nj 2 --ngpu 1 through utils/run.py: each job gets a CUDA_VISIBLE_DEVICES and runs on CUDA."""
    import subprocess

    root, data, models, cpu = setup
    conf = tmp_path / "up.yaml"
    conf.write_text(yaml.safe_dump(config("hubert_base", models)))
    out = tmp_path / "dump"
    repo = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(repo / "utils" / "run.py"), "--gpu", "1", "JOB=1:2",
                        str(out / "log" / "extract.JOB.log"), sys.executable, "-m", "etser.features.extract", "job",
                        "--config", str(conf), "--data", str(data), "--dir", str(out), "--nj", "2", "--job", "JOB",
                        "--ngpu", "1", "--num_threads", "2"], cwd=repo, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    from etser.launch.jobs import visible_gpus

    visible = visible_gpus()
    for j in (1, 2):
        log = (out / "log" / f"extract.{j}.log").read_text()
        assert f"# CUDA_VISIBLE_DEVICES={visible[(j - 1) % len(visible)]}" in log
        assert json.loads((out / "split2" / f"done.{j}").read_text())["device"] == "cuda"
    assert merge(conf, data, out, nj=2)["devices"] == ["cuda"]
