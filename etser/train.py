"""Stage 3: train a downstream head on stage-2 features.

    python -m etser.train --config conf/train/superb.yaml --task speech_four --seed 1 \\
        --data_dir data --feats_dir dump/<tag> --exp_dir exp/<tag>/superb/speech_four/seed1
    python -m etser.train --job_list exp/<tag>/train_jobs.txt --job JOB --num_jobs N

Pooled heads train from the per-layer time-mean/std cache held in memory, so an epoch is one pass over a
few small tensors; frame heads read ``frames.scp``.  The best epoch is chosen on the validation set
(``select_metric``, default UA); training stops after ``patience`` epochs without improvement.

Every epoch ends with a checkpoint (model, optimizer, RNG states, early-stopping state, history) written
atomically; rerunning the same command after a kill resumes from the last one and ends with the same
weights and metrics as an uninterrupted run (deterministic on CPU for a given seed and thread count).
A finished exp dir (``done``) is skipped unless ``--overwrite true``.

Writes: ``config.yaml`` (resolved config), ``cmd``, ``upstream.yaml`` / ``feats_meta.json`` (what the features
came from, for inference), ``train.log``, ``checkpoints/``, ``best.pt``, ``curve.png``, ``done``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import logging
import os
import platform
import resource
import shlex
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Sequence

import kaldiio
import numpy as np
import torch
import torch.nn.functional as F
import yaml
from tqdm import tqdm

from etser.cli import str2bool
from etser.datadir import read_table
from etser.heads import Head, build_head, select_layers
from etser.score import METRIC_NAMES, quick_metrics
from etser.tasks import EMOTIONS_ALL, get_task

LOG = logging.getLogger("etser.train")
# per-epoch lines: train.log only (the job log gets the progress bar and the summary)
EPOCH_LOG = logging.getLogger("etser.train.epochs")
EPOCH_LOG.propagate = False

DEFAULTS = {
    "head": None,
    "head_conf": {},
    "optim": "adam",
    "optim_conf": {"lr": 1.0e-3},
    "batch_size": 32,
    "grad_clip": None,          # max gradient norm; null: no clipping
    "max_epochs": 100,
    "patience": 20,             # epochs without val improvement before stopping; null: never stop early
    "select_metric": "ua",      # ua | wa | macro_f1 | weighted_f1, chosen on the validation set
    "class_weighted_loss": False,
    "keep_checkpoints": 2,      # per-epoch checkpoints kept (the last ones)
    "train_set": "train",
    "valid_set": "val",
    "preload_frames_gb": 2.0,   # frame heads: hold frames in memory up to this size, else read per batch
}
OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


# ---------------------------------------------------------------- config

def load_config(path: Path | None, overrides: Sequence[str] = ()) -> dict:
    """Defaults <- YAML file <- ``key=value`` overrides (value parsed as YAML; ``a.b=v`` sets a nested key)."""
    conf = copy.deepcopy(DEFAULTS)
    if path is not None:
        with open(path, encoding="utf-8") as f:
            loaded = yaml.safe_load(f) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping of options")
        unknown = sorted(set(loaded) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"{path}: unknown option(s) {', '.join(unknown)}; known: {', '.join(DEFAULTS)}")
        for k, v in loaded.items():
            conf[k] = {**conf[k], **v} if isinstance(conf[k], dict) and isinstance(v, dict) else v
    for item in overrides:
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"--conf {item!r}: expected key=value")
        *parents, leaf = key.split(".")
        if parents and parents[0] not in DEFAULTS or not parents and leaf not in DEFAULTS:
            raise ValueError(f"--conf {item!r}: unknown option {key.split('.')[0]!r}")
        node = conf
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    if conf["head"] is None:
        raise ValueError(f"{path or 'config'}: 'head' is not set (superb, paper, attentive)")
    if conf["select_metric"] not in METRIC_NAMES:
        raise ValueError(f"select_metric must be one of {', '.join(METRIC_NAMES)}, got {conf['select_metric']!r}")
    if conf["optim"] not in OPTIMIZERS:
        raise ValueError(f"optim must be one of {', '.join(OPTIMIZERS)}, got {conf['optim']!r}")
    return conf


def config_hash(conf: dict) -> str:
    return hashlib.sha256(json.dumps(conf, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_exp_config(exp_dir: Path) -> dict:
    with open(Path(exp_dir) / "config.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f)


# ---------------------------------------------------------------- data

@dataclasses.dataclass
class Split:
    """One set of one task: utterances, label ids and the model inputs."""

    utts: list[str]
    labels: np.ndarray                 # (N,) int64 class ids of the task
    left_out: dict[str, int]           # label -> utterances not in the task's classes
    mean: torch.Tensor | None = None   # pooled heads: (N, L, D)
    std: torch.Tensor | None = None
    frames: list | None = None         # frame heads: per utterance (T, L', D) tensors, or a lazy reader
    frame_reader: Callable | None = None

    def __len__(self) -> int:
        return len(self.utts)


def read_task_labels(data_set_dir: Path, task_name: str, log: Callable = LOG.info
                     ) -> tuple[list[str], np.ndarray, dict[str, int]]:
    """Utterances and class ids of a task; utterances whose label is not a task class are left out (counted)."""
    task = get_task(task_name)
    path = Path(data_set_dir) / task.label_file
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: task {task_name} needs {task.label_file} in {data_set_dir} "
                                "(stage 1 writes it only when the release has that modality)")
    utts, labels, left_out = [], [], Counter()
    for utt, label in read_table(path, allow_empty_value=False).items():
        if label not in EMOTIONS_ALL:
            raise ValueError(f"{path}: utterance {utt} has unknown label {label!r} (known: {', '.join(EMOTIONS_ALL)})")
        if label in task.classes:
            utts.append(utt)
            labels.append(task.classes.index(label))
        else:
            left_out[label] += 1
    if not utts:
        raise ValueError(f"{path}: no utterance has a label among {', '.join(task.classes)}")
    if left_out:
        log(f"{path}: {task_name} uses {len(utts)} utterances; left out {sum(left_out.values())} whose label is "
            f"not one of its {len(task.classes)} classes ("
            + ", ".join(f"{k} {v}" for k, v in sorted(left_out.items())) + ")")
    return utts, np.asarray(labels, dtype=np.int64), dict(left_out)


def read_feats_meta(feats_set_dir: Path) -> dict:
    path = Path(feats_set_dir) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run stage 2 (feature extraction) for this set first")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _read_pooled(scp: Path, cache: dict | None) -> dict[str, np.ndarray]:
    if not Path(scp).is_file():
        raise FileNotFoundError(f"{scp} not found: run stage 2 (feature extraction) first")
    key = ("pooled", str(Path(scp).resolve()), os.path.getmtime(scp))
    if cache is not None and key in cache:
        return cache[key]
    table = {u: np.asarray(m, dtype=np.float32) for u, m in kaldiio.load_scp_sequential(str(scp))}
    if cache is not None:
        cache[key] = table
    return table


def _missing(utts: Sequence[str], table, label_path: Path, scp: Path) -> None:
    missing = [u for u in utts if u not in table]
    if missing:
        raise KeyError(f"{len(missing)} utterance(s) of {label_path} have no features in {scp} "
                       f"(first: {missing[0]}); rerun stage 2 for this set")


def load_split(data_set_dir: Path, feats_set_dir: Path, task_name: str, layers: Sequence[int], input_kind: str,
               cache: dict | None = None, log: Callable = LOG.info, preload_frames_gb: float = 2.0) -> Split:
    """Labels of ``task_name`` in ``data_set_dir`` and the features of ``layers`` from ``feats_set_dir``."""
    utts, labels, left_out = read_task_labels(data_set_dir, task_name, log)
    split = Split(utts, labels, left_out)
    label_path = Path(data_set_dir) / get_task(task_name).label_file
    layers = list(layers)
    if input_kind == "pooled":
        for stat in ("mean", "std"):
            scp = Path(feats_set_dir) / f"pooled_{stat}.scp"
            table = _read_pooled(scp, cache)
            _missing(utts, table, label_path, scp)
            setattr(split, stat, torch.from_numpy(np.stack([table[u][layers] for u in utts])))
        return split
    meta = read_feats_meta(feats_set_dir)
    frame_layers = list(meta.get("frame_layers") or [])
    scp = Path(feats_set_dir) / "frames.scp"
    if not scp.is_file() or not frame_layers:
        raise FileNotFoundError(f"{scp} not found: this head needs frame-level features; set frame_layers in the "
                                "upstream config and rerun stage 2")
    pos = [frame_layers.index(layer) for layer in layers]
    dim = int(meta["dim"])
    reader = kaldiio.load_scp(str(scp))
    _missing(utts, reader, label_path, scp)

    def read(utt: str) -> torch.Tensor:
        m = np.asarray(reader[utt], dtype=np.float32)
        return torch.from_numpy(m.reshape(m.shape[0], len(frame_layers), dim)[:, pos])

    n2f = Path(feats_set_dir) / "utt2num_frames"
    num_frames = {u: int(v) for u, v in read_table(n2f).items()} if n2f.is_file() else {}
    size_gb = sum(num_frames.get(u, 0) for u in utts) * len(pos) * dim * 4 / 1e9
    if size_gb <= preload_frames_gb:
        # one dict per scp and layers, shared by the tasks of a job list: each adds the utterances it lacks
        key = ("frames", str(scp.resolve()), os.path.getmtime(scp), tuple(pos))
        frames = cache.setdefault(key, {}) if cache is not None else {}
        todo = [u for u in utts if u not in frames]
        for u in tqdm(todo, desc=f"read {scp}", file=sys.stderr, mininterval=5, disable=len(todo) < 2000):
            frames[u] = read(u)
        split.frames = [frames[u] for u in utts]
    else:
        log(f"{scp}: {size_gb:.1f} GB of frames > preload_frames_gb {preload_frames_gb}: reading per batch")
        split.frame_reader = read
    return split


def make_batch(split: Split, idx: Sequence[int], device: str) -> dict[str, torch.Tensor]:
    if split.mean is not None:
        idx_t = torch.as_tensor(idx)
        return {"mean": split.mean[idx_t].to(device), "std": split.std[idx_t].to(device)}
    seqs = [split.frames[i] if split.frames is not None else split.frame_reader(split.utts[i]) for i in idx]
    lengths = torch.tensor([s.shape[0] for s in seqs])
    frames = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True)
    return {"frames": frames.to(device), "lengths": lengths.to(device)}


@torch.no_grad()
def predict(model: Head, split: Split, device: str, batch_size: int | None = None) -> tuple[np.ndarray, float]:
    """Class probabilities (N, C) and the mean cross-entropy (unweighted) on ``split``."""
    # padded frame batches grow with the longest utterance: smaller batches for frame heads
    batch_size = batch_size or (256 if split.mean is not None else 32)
    model.eval()
    probs, loss = [], 0.0
    labels = torch.as_tensor(split.labels)
    for start in range(0, len(split), batch_size):
        idx = list(range(start, min(start + batch_size, len(split))))
        logits = model(make_batch(split, idx, device)).float().cpu()
        loss += F.cross_entropy(logits, labels[idx], reduction="sum").item()
        probs.append(torch.softmax(logits, dim=-1).numpy())
    return np.concatenate(probs).astype(np.float64), loss / len(split)


# ---------------------------------------------------------------- checkpoints

def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _checkpoints(exp_dir: Path) -> list[tuple[int, Path]]:
    found = []
    for p in (exp_dir / "checkpoints").glob("epoch*.pt"):
        try:
            found.append((int(p.stem[len("epoch"):]), p))
        except ValueError:
            continue
    return sorted(found)


def load_trained(exp_dir: Path, device: str = "cpu") -> tuple[Head, dict]:
    """The best model of a trained exp dir and its description (head, task, classes, layers, ...)."""
    path = Path(exp_dir) / "best.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: train first (stage 3)")
    best = torch.load(path, map_location=device, weights_only=False)
    info = best["info"]
    model = build_head(info["head"], info["head_conf"], len(info["layers"]), info["dim"], len(info["classes"]))
    model.load_state_dict(best["model"])
    model.to(device).eval()
    return model, {**info, "epoch": best["epoch"], "val_metrics": best["val_metrics"]}


# ---------------------------------------------------------------- training

def pick_device(ngpu: int) -> str:
    if ngpu <= 0:
        return "cpu"
    if not torch.cuda.is_available():
        raise RuntimeError(f"--ngpu {ngpu} but CUDA is not available on {os.uname().nodename}; use --ngpu 0")
    return "cuda"


def device_name(device: str) -> str:
    """``cuda: NVIDIA H100 80GB HBM3`` / ``cpu: <model name>`` for the environment section of RESULTS.md."""
    if device != "cpu":
        return f"cuda: {torch.cuda.get_device_name()}"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"cpu: {line.split(':', 1)[1].strip()}"
    except OSError:
        pass
    return f"cpu: {platform.machine()}"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _setup_log_file(exp_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(exp_dir / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    LOG.addHandler(handler)
    LOG.setLevel(logging.INFO)
    EPOCH_LOG.addHandler(handler)
    EPOCH_LOG.setLevel(logging.INFO)
    return handler


def plot_curve(history: list[dict], metric: str, best_epoch: int, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    a1.plot(ep, [h["train_loss"] for h in history], label="train")
    a1.plot(ep, [h["val_loss"] for h in history], label="val")
    a1.set_xlabel("epoch")
    a1.set_ylabel("cross-entropy")
    a1.legend()
    for key, name in METRIC_NAMES.items():
        a2.plot(ep, [100 * h[f"val_{key}"] for h in history], label=f"val {name}", lw=2 if key == metric else 1)
    a2.axvline(best_epoch, color="grey", ls="--", lw=1, label=f"best (epoch {best_epoch})")
    a2.set_xlabel("epoch")
    a2.set_ylabel("%")
    a2.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def train(conf: dict, task_name: str, data_dir: Path, feats_dir: Path, exp_dir: Path, seed: int,
          device: str = "cpu", num_threads: int = 1, overwrite: bool = False, command: str = "",
          cache: dict | None = None) -> dict:
    """Train one head; returns the summary written to ``exp_dir/done``."""
    exp_dir, data_dir, feats_dir = Path(exp_dir), Path(data_dir), Path(feats_dir)
    task = get_task(task_name)
    meta = read_feats_meta(feats_dir / conf["train_set"])
    num_layers, dim = int(meta["num_layers"]), int(meta["dim"])
    layers = select_layers(conf["head"], conf["head_conf"], num_layers, meta.get("frame_layers"))
    resolved = {**conf, "task": task_name, "classes": list(task.classes), "seed": seed,
                "data_dir": str(data_dir), "feats_dir": str(feats_dir), "tag": feats_dir.name,
                "upstream": meta.get("upstream", feats_dir.name), "layers": layers}
    # what determines the result (not where it runs)
    chash = config_hash({k: v for k, v in resolved.items() if k not in ("data_dir", "feats_dir")})
    done = exp_dir / "done"
    if done.is_file() and not overwrite:
        summary = json.loads(done.read_text())
        if summary.get("config_hash") != chash:
            raise RuntimeError(f"{exp_dir} was trained with a different config: use --overwrite true to retrain, "
                               "or another --exp_dir")
        LOG.info("%s: already trained (best epoch %s); skipping (--overwrite true to retrain)",
                 exp_dir, summary["best_epoch"])
        return summary
    if overwrite and exp_dir.exists():
        shutil.rmtree(exp_dir)
    (exp_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    handler = _setup_log_file(exp_dir)
    try:
        return _train(resolved, chash, meta, layers, num_layers, dim, task, data_dir, feats_dir, exp_dir, seed,
                      device, num_threads, command, cache)
    finally:
        LOG.removeHandler(handler)
        EPOCH_LOG.removeHandler(handler)
        handler.close()


def _train(conf, chash, meta, layers, num_layers, dim, task, data_dir, feats_dir, exp_dir, seed, device,
           num_threads, command, cache) -> dict:
    start_time = time.monotonic()
    # The CPU kernels these heads use are deterministic for a fixed thread count
    # (torch.use_deterministic_algorithms would add 2 s of imports per process and change nothing here).
    torch.set_num_threads(num_threads)
    if device != "cpu":
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False

    ckpts = _checkpoints(exp_dir)
    # on the CPU: RNG states must be CPU tensors; the model and optimizer move theirs to the device
    last = torch.load(ckpts[-1][1], map_location="cpu", weights_only=False) if ckpts else None
    if last is not None and last["config_hash"] != chash:  # refuse before anything in the exp dir is rewritten
        raise RuntimeError(f"{ckpts[-1][1]} was written with a different config: use --overwrite true to start "
                           "over, or another --exp_dir")
    LOG.info("%s %s", "resuming" if ckpts else "starting", command or "(no command line)")
    (exp_dir / "cmd").write_text(command + "\n")
    with open(exp_dir / "config.yaml", "w", encoding="utf-8") as f:
        env = {"torch": str(torch.__version__), "python": platform.python_version(), "device": device_name(device),
               "num_threads": num_threads}
        yaml.safe_dump({**conf, "config_hash": chash, "env": env}, f, sort_keys=False)
    (exp_dir / "feats_meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    for name in ("upstream.yaml",):  # the upstream config the features came from, for inference
        src = feats_dir / conf["train_set"] / name
        if not src.is_file():
            src = feats_dir / name
        if src.is_file():
            shutil.copyfile(src, exp_dir / name)

    input_kind = "frames" if conf["head"] == "attentive" else "pooled"
    kw = dict(cache=cache, log=LOG.info, preload_frames_gb=conf["preload_frames_gb"])
    tr = load_split(data_dir / conf["train_set"], feats_dir / conf["train_set"], task.name, layers, input_kind, **kw)
    va = load_split(data_dir / conf["valid_set"], feats_dir / conf["valid_set"], task.name, layers, input_kind, **kw)
    num_classes = len(task.classes)
    counts = np.bincount(tr.labels, minlength=num_classes)
    LOG.info("task %s: train %d utts (%s), val %d utts; head %s on layers %s of %d (dim %d); device %s",
             task.name, len(tr), ", ".join(f"{c} {n}" for c, n in zip(task.classes, counts)), len(va),
             conf["head"], _layer_span(layers), num_layers, dim, device)
    if (counts == 0).any():
        LOG.warning("classes with no training utterance: %s",
                    ", ".join(c for c, n in zip(task.classes, counts) if n == 0))

    torch.manual_seed(seed)
    model = build_head(conf["head"], conf["head_conf"], len(layers), dim, num_classes)
    pooled = _pooled_for_normalizer(tr, data_dir, feats_dir, conf, task, layers, cache)
    model.fit_normalizer(*pooled)
    model.to(device)
    opt = OPTIMIZERS[conf["optim"]](model.parameters(), **conf["optim_conf"])
    weight = None
    if conf["class_weighted_loss"]:
        # inverse frequency, mean 1 over the training utterances; an absent class gets 0
        w = np.where(counts > 0, len(tr) / (num_classes * np.maximum(counts, 1)), 0.0)
        weight = torch.tensor(w, dtype=torch.float32, device=device)
        LOG.info("class weights: %s", ", ".join(f"{c} {x:.3f}" for c, x in zip(task.classes, w)))
    shuffle = torch.Generator().manual_seed(seed)
    metric = conf["select_metric"]
    state = {"epoch": 0, "best": -1.0, "best_epoch": 0, "bad_epochs": 0, "history": []}

    if last is not None:
        model.load_state_dict(last["model"])
        opt.load_state_dict(last["optimizer"])
        torch.set_rng_state(last["torch_rng"])
        shuffle.set_state(last["shuffle_rng"])
        if last.get("cuda_rng") is not None and device != "cpu":
            torch.cuda.set_rng_state_all(last["cuda_rng"])
        state = last["state"]
        LOG.info("resumed from %s (epoch %d done; best epoch %d, val %s %.2f)", ckpts[-1][1], state["epoch"],
                 state["best_epoch"], METRIC_NAMES[metric], 100 * state["best"])

    info = {"head": conf["head"], "head_conf": conf["head_conf"], "task": task.name, "classes": list(task.classes),
            "layers": layers, "num_layers": num_layers, "dim": dim, "seed": seed, "tag": conf["tag"],
            "upstream": conf["upstream"], "config_hash": chash}
    y_train = torch.as_tensor(tr.labels, device=device)
    bs, patience = int(conf["batch_size"]), conf["patience"]
    stopped_early = patience is not None and state["bad_epochs"] >= patience
    first_epoch = state["epoch"]  # > 0 when resumed: the figures count this run's epochs only
    interactive = sys.stderr.isatty()  # job logs get a line every 30 s, not a carriage-return stream
    bar = tqdm(total=conf["max_epochs"], initial=first_epoch, desc=f"train {exp_dir}", unit="epoch",
               file=sys.stderr, mininterval=0.5 if interactive else 30, leave=False, dynamic_ncols=interactive)
    for epoch in range(state["epoch"] + 1, conf["max_epochs"] + 1):
        if stopped_early:
            break
        t0 = time.monotonic()
        model.train()
        perm = torch.randperm(len(tr), generator=shuffle).tolist()
        total = 0.0
        for s in range(0, len(tr), bs):
            idx = perm[s:s + bs]
            logits = model(make_batch(tr, idx, device))
            loss = F.cross_entropy(logits, y_train[idx], weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if conf["grad_clip"]:
                torch.nn.utils.clip_grad_norm_(model.parameters(), float(conf["grad_clip"]))
            opt.step()
            total += loss.item() * len(idx)
        probs, val_loss = predict(model, va, device)
        m = quick_metrics(va.labels, probs.argmax(1), num_classes)
        row = {"epoch": epoch, "train_loss": total / len(tr), "val_loss": val_loss,
               **{f"val_{k}": m[k] for k in METRIC_NAMES}, "seconds": time.monotonic() - t0}
        state["history"].append(row)
        improved = m[metric] > state["best"]
        if improved:
            state.update(best=m[metric], best_epoch=epoch, bad_epochs=0)
            _atomic_save({"model": model.state_dict(), "epoch": epoch, "val_metrics": m, "info": info},
                         exp_dir / "best.pt")
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch
        stopped_early = patience is not None and state["bad_epochs"] >= patience
        _atomic_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state(),
                      "shuffle_rng": shuffle.get_state(),
                      "cuda_rng": torch.cuda.get_rng_state_all() if device != "cpu" else None,
                      "state": state, "config_hash": chash}, exp_dir / "checkpoints" / f"epoch{epoch}.pt")
        for _, old in _checkpoints(exp_dir)[:-max(1, int(conf["keep_checkpoints"]))]:
            old.unlink()
        EPOCH_LOG.info("epoch %d train_loss %.4f val_loss %.4f %s (%.2f s)%s", epoch, row["train_loss"], val_loss,
                       " ".join(f"val_{k} {100 * m[k]:.2f}" for k in METRIC_NAMES), row["seconds"],
                       " *best" if improved else "")
        bar.update(1)
        bar.set_postfix_str(f"val {METRIC_NAMES[metric]} {100 * m[metric]:.1f} best {100 * state['best']:.1f}",
                            refresh=False)
    bar.close()

    why = f"no val improvement for {patience} epochs" if stopped_early else f"max_epochs {conf['max_epochs']}"
    title = f"{conf['tag']} {conf['head']} {task.name} seed{seed}"
    plot_curve(state["history"], metric, state["best_epoch"], exp_dir / "curve.png", title)
    best = torch.load(exp_dir / "best.pt", map_location="cpu", weights_only=False)
    seconds = time.monotonic() - start_time
    summary = {"best_epoch": state["best_epoch"], "epochs": state["epoch"], "stopped": why,
               "val_metrics": {k: best["val_metrics"][k] for k in (*METRIC_NAMES, "num_utts")},
               "select_metric": metric, "config_hash": chash, "seconds_last_run": round(seconds, 2)}
    (exp_dir / "done").write_text(json.dumps(summary, indent=1) + "\n")
    LOG.info("%s: %d epochs (%s), best epoch %d val %s %.2f; %.1f s, %.0f train utts/s, peak RSS %.0f MB",
             exp_dir, state["epoch"], why, state["best_epoch"], METRIC_NAMES[metric], 100 * state["best"], seconds,
             len(tr) * (state["epoch"] - first_epoch) / max(seconds, 1e-9), _peak_rss_mb())
    return summary


def _layer_span(layers: Sequence[int]) -> str:
    if len(layers) > 2 and list(layers) == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}-{layers[-1]}"
    return ",".join(map(str, layers))


def _pooled_for_normalizer(tr: Split, data_dir, feats_dir, conf, task, layers, cache):
    """Training-set pooled statistics of the head's layers (frame heads standardise frames with them)."""
    if tr.mean is not None:
        return tr.mean, tr.std
    p = load_split(data_dir / conf["train_set"], feats_dir / conf["train_set"], task.name, layers, "pooled",
                   cache=cache, log=lambda *_: None)
    return p.mean, p.std


# ---------------------------------------------------------------- command line

def job_list_lines(path: Path, job: int, num_jobs: int) -> list[list[str]]:
    """Argument lists of the lines of ``path`` that job ``job`` (1-based) of ``num_jobs`` runs (round robin)."""
    if not 1 <= job <= num_jobs:
        raise ValueError(f"--job {job} is not in 1..{num_jobs}")
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f.read().splitlines() if line.strip() and not line.startswith("#")]
    return [shlex.split(line) for i, line in enumerate(lines) if i % num_jobs == job - 1]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m etser.train", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, help="conf/train/<head>.yaml")
    ap.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config option (YAML value; head_conf.stats=[mean] for nested keys)")
    ap.add_argument("--task", help="speech_four, multi_four, speech_all, multi_all, text_*, video_*")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data_dir", type=Path, default=Path("data"), help="holds <train_set>/, <valid_set>/")
    ap.add_argument("--feats_dir", type=Path, help="dump/<tag>: holds <train_set>/, <valid_set>/")
    ap.add_argument("--exp_dir", type=Path)
    ap.add_argument("--ngpu", type=int, default=0)
    ap.add_argument("--num_threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--overwrite", type=str2bool, default=False, help="retrain a finished exp dir")
    ap.add_argument("--job_list", type=Path, help="file of argument lines (one training each)")
    ap.add_argument("--job", type=int, default=1, help="with --job_list: this job's index (1-based)")
    ap.add_argument("--num_jobs", type=int, default=1, help="with --job_list: number of jobs sharing the list")
    return ap


def run_args(args: argparse.Namespace, argv: Sequence[str], cache: dict) -> dict:
    for name in ("config", "task", "feats_dir", "exp_dir"):
        if getattr(args, name) is None:
            raise ValueError(f"--{name} is required")
    conf = load_config(args.config, args.conf)
    command = "python -m etser.train " + " ".join(shlex.quote(a) for a in argv)
    return train(conf, args.task, args.data_dir, args.feats_dir, args.exp_dir, args.seed, pick_device(args.ngpu),
                 args.num_threads, args.overwrite, command, cache)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    ap = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = ap.parse_args(argv)
    if args.job_list is None:
        try:
            run_args(args, argv, {})
        except (ValueError, FileNotFoundError, KeyError, RuntimeError) as e:
            LOG.error("%s", e.args[0] if isinstance(e, KeyError) else e)
            return 1
        return 0
    cache: dict = {}
    try:
        lines = job_list_lines(args.job_list, args.job, args.num_jobs)
    except (OSError, ValueError) as e:
        LOG.error("--job_list %s: %s", args.job_list, e)
        return 1
    LOG.info("job %d/%d: %d training(s) from %s", args.job, args.num_jobs, len(lines), args.job_list)
    failed = []
    for line in lines:
        try:
            run_args(ap.parse_args(line), line, cache)
        except Exception:  # run the others; the exit code says something failed
            LOG.exception("training failed: %s", " ".join(line))
            failed.append(" ".join(line))
    if failed:
        LOG.error("%d of %d trainings failed", len(failed), len(lines))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
