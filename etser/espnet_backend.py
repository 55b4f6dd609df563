"""Stages 3-4 with ESPnet: train with ``espnet2.bin.cls_train``, score with ``espnet2.bin.cls_inference``.

    python -m etser.espnet_backend train --config conf/espnet/<name>.yaml --task T --seed S --data_dir data \\
        --feats_dir dump/<tag> --exp_dir exp/<tag>/espnet_<name>/<task>/seed<S> --ngpu N --num_threads N
    python -m etser.espnet_backend score --exp_dir EXP --sets "val test" --data_dir data

The config is ESPnet's own YAML (``cls_train --config``).  One with a ``frontend`` reads audio from our
``data/<set>/wav.scp`` (ESPnet's s3prl frontend, frozen or fine-tuned); one without reads our stage-2
features (``frames.scp`` when stage 2 wrote frames, else ``pooled_mean.scp``) with ``--input_size``.

ESPnet's inputs are written into ``EXP/data/<set>/`` (``text`` of labels, ``speech.scp``) and
``EXP/data/token_list``; no audio is copied.  ESPnet's ``sound`` reader neither resamples nor downmixes, and
the release mixes 44.1/16 kHz, stereo/mono: every entry is a ``sox ... |`` pipe converting on the fly to
16 kHz mono float samples, read by kaldiio (data type ``kaldi_ark``), as Kaldi recipes do.

ESPnet writes its usual layout into EXP (``config.yaml``, ``checkpoint.pth``, ``valid.*.best.pth``,
``valid.*.ave_*best.pth``, ``tensorboard/``, ``images/``); collect-stats goes to ``EXP/stats/``; ``train.log``
holds both ESPnet runs; ``done`` marks a finished training.  A rerun after a kill resumes through ESPnet's
``--resume true``.  Scoring writes ``EXP/cls_<set>/`` (ESPnet's output) and ``EXP/decode_<set>/`` with the
same files as our backend (``metrics.json``, ``predictions.txt``, ``confusion.txt``/``.png``, ``report.txt``).

Only this module imports ESPnet, and only inside the functions that need it (the ESPnet runs are
subprocesses): importing the rest of ``etser`` stays cheap.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from etser.datadir import read_table
from etser.tasks import get_task
from etser.yamlfile import read_yaml

LOG = logging.getLogger("etser.espnet_backend")

REQUIRED_ESPNET = "202611"
TOKEN_UNK = "<unk>"     # ESPnet's cls token lists end with it: n_classes = len(token_list) - 1
RESERVED = (TOKEN_UNK, "<blank>")
SPEECH_FOLD = {"audio": 80000, "frames": 800, "pooled": 100}   # fold lengths for ESPnet's folded batches
# The head (conf/espnet/<name>.yaml) of a run that names none: it reads the stage-2 features, so it fits an
# upstream of any modality and downloads nothing.
DEFAULT_HEAD = "feats"


class EspnetError(RuntimeError):
    """An ESPnet run or input that cannot be used; the message says which file or log to read."""


def check_espnet() -> str:
    """espnet's version, or EspnetError naming the requirement."""
    from importlib import metadata

    need = f"the ESPnet backend needs espnet=={REQUIRED_ESPNET} (requirements.txt; utils/setup_env.sh installs it)"
    try:
        version = metadata.version("espnet")
    except metadata.PackageNotFoundError:
        raise EspnetError(f"{need}, but espnet is not installed in {sys.executable}") from None
    if version != REQUIRED_ESPNET:
        raise EspnetError(f"{need}, but {sys.executable} has espnet {version}")
    return version


# ---------------------------------------------------------------- ESPnet inputs

def token_list(classes: Sequence[str]) -> list[str]:
    """The task's classes in our order, then ESPnet's ``<unk>``; labels the word tokenizer cannot hold refused."""
    for c in classes:
        if not c or any(ch.isspace() for ch in c) or c in RESERVED:
            raise EspnetError(f"class {c!r} cannot be an ESPnet cls token: ESPnet splits a label at whitespace "
                              f"and reserves {', '.join(RESERVED)}")
    if len(set(classes)) != len(classes):
        raise EspnetError(f"duplicate classes {list(classes)}")
    return [*classes, TOKEN_UNK]


def task_labels(data_set_dir: Path, task_name: str, tasks_conf: Path | None = None
                ) -> tuple[dict[str, str], dict[str, int]]:
    """{utt: label} of the utterances whose label is one of the task's classes (a task of ``tasks_conf``,
    default conf/tasks.yaml), and the others' counts."""
    task = get_task(task_name, tasks_conf)
    path = Path(data_set_dir) / task.label_file
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: task {task_name} needs it (run stage 1)")
    labels, left_out = {}, {}
    for utt, label in read_table(path).items():
        if label in task.classes:
            labels[utt] = label
        else:
            left_out[label] = left_out.get(label, 0) + 1
    if not labels:
        raise EspnetError(f"{path}: no utterance has a label of task {task_name} ({', '.join(task.classes)})")
    return labels, left_out


def audio_entries(wav_scp: Path, utts: Sequence[str], rate: int = 16000) -> dict[str, str]:
    """kaldiio scp values that give each utterance as float32 ``rate`` Hz mono samples in [-1, 1].

    Each is a shell pipe: a Kaldi binary float-vector header (its length computed here from the file's header)
    followed by sox's raw float32 output, downmixed (channel mean) and resampled, padded and cut to exactly
    that length.  kaldiio reads it as a vector; ESPnet's own ``sound`` reader cannot resample or downmix, and
    kaldiio's WAV reader would give int16 samples, which ESPnet's kaldi_ark loader does not scale.
    """
    import soundfile as sf

    table = read_table(wav_scp)
    missing = [u for u in utts if u not in table]
    if missing:
        raise EspnetError(f"{wav_scp}: no entry for {len(missing)} labelled utterance(s), first {missing[0]}")
    sox = shutil.which("sox")
    if sox is None:
        raise EspnetError(f"{wav_scp}: the ESPnet backend reads audio through sox pipes (16 kHz mono on the fly, "
                          "no copy of the audio), and sox is not on PATH: install it (apt-get install sox)")
    out = {}
    for u in utts:
        path = table[u]
        if path.endswith("|"):
            raise EspnetError(f"{wav_scp}: {u}: piped entries are not supported by the ESPnet backend ({path})")
        try:
            info = sf.info(path)
        except Exception as e:  # noqa: BLE001 - say which utterance, whatever soundfile raised
            raise EspnetError(f"{wav_scp}: {u}: cannot read {path}: {e}") from None
        n = (info.frames * rate + info.samplerate // 2) // info.samplerate
        if n == 0:
            raise EspnetError(f"{wav_scp}: {u}: {path} has no samples")
        header = "".join(f"\\{b:03o}" for b in b"\0BFV \4" + struct.pack("<i", n))
        out[u] = (f"{{ printf '{header}'; sox -V1 {shlex.quote(path)} -t f32 - channels 1 rate {rate} "
                  f"pad 0 1 trim 0 {n}s; }} |")
    return out


def feature_entries(feats_set_dir: Path, utts: Sequence[str]) -> tuple[dict[str, str], str, int]:
    """scp values of our stage-2 features: frames if written, else the pooled (L, D) means; kind, input size."""
    meta_path = Path(feats_set_dir) / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found: run stage 2 for this upstream first")
    meta = json.loads(meta_path.read_text())
    if (Path(feats_set_dir) / "frames.scp").is_file() and meta.get("frame_layers"):
        kind, scp = "frames", Path(feats_set_dir) / "frames.scp"
        size = len(meta["frame_layers"]) * int(meta["dim"])
    else:
        kind, scp = "pooled", Path(feats_set_dir) / "pooled_mean.scp"
        size = int(meta["dim"])
    table = read_table(scp)
    missing = [u for u in utts if u not in table]
    if missing:
        raise EspnetError(f"{scp}: no features for {len(missing)} labelled utterance(s), first {missing[0]}")
    return {u: table[u] for u in utts}, kind, size


def write_inputs(exp_dir: Path, set_name: str, data_dir: Path, feats_dir: Path, task_name: str,
                 input_kind: str, tasks_conf: Path | None = None) -> dict:
    """EXP/data/<set>/{text,speech.scp} and EXP/data/token_list; returns what was written."""
    labels, left_out = task_labels(data_dir / set_name, task_name, tasks_conf)
    utts = sorted(labels)
    if input_kind == "audio":
        entries, kind, size = audio_entries(data_dir / set_name / "wav.scp", utts), "audio", None
    else:
        entries, kind, size = feature_entries(feats_dir / set_name, utts)
    out = exp_dir / "data" / set_name
    out.mkdir(parents=True, exist_ok=True)
    _write_table(out / "text", {u: labels[u] for u in utts})
    _write_table(out / "speech.scp", entries)
    tokens = token_list(get_task(task_name, tasks_conf).classes)
    (exp_dir / "data" / "token_list").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return {"dir": out, "kind": kind, "input_size": size, "num_utts": len(utts), "left_out": left_out,
            "labels": labels}


def _write_table(path: Path, table: dict[str, str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for k, v in table.items():
            f.write(f"{k} {v}\n")
    tmp.replace(path)


# ---------------------------------------------------------------- running ESPnet

def run_espnet(args: Sequence[str], log_path: Path, env: dict | None = None, what: str = "") -> None:
    """``python -m <args>`` with its output appended to ``log_path``; EspnetError naming the log on failure."""
    cmd = [sys.executable, "-m", *map(str, args)]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    killed = log_path.is_file() and not _last_line(log_path).startswith("# exit ")
    with open(log_path, "a", encoding="utf-8") as log:
        if killed:    # say so where the reader of the log sees it, before the rerun's lines
            log.write("# (the run above ended without an exit status: killed or its machine lost)\n")
        log.write(f"# {time.strftime('%F %T')} {shlex.join(cmd)}\n")
        log.flush()
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.write(f"# exit {rc} after {time.monotonic() - start:.1f} s\n")
    if rc != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-12:]
        # the naming line last: a launcher shows only the end of the job log (utils/run.py: 6 lines)
        raise EspnetError(f"{what or args[0]} failed; last lines of {log_path}:\n" + "\n".join(tail)
                          + f"\n{what or args[0]} failed (exit {rc}); its log is {log_path}")
    LOG.info("%s done in %.1f s (log %s)", what or args[0], time.monotonic() - start, log_path)


def _last_line(path: Path) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
        lines = f.read().decode("utf-8", errors="replace").splitlines()
    return lines[-1] if lines else "# exit "   # an empty log holds no unfinished run


def _child_env(num_threads: int) -> dict:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(num_threads)
    # ESPnet's trainer imports matplotlib for its plots: never a display
    env.setdefault("MPLBACKEND", "Agg")
    return env


def read_config(path: Path) -> dict:
    try:
        conf = read_yaml(path) or {}
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found (ESPnet configs live in conf/espnet/)") from None
    if not isinstance(conf, dict):
        raise EspnetError(f"{path}: not a YAML mapping of cls_train options")
    return conf


def check_frontend(conf: dict, config_path: Path) -> None:
    """A local S3PRL checkpoint named in the config must exist: offline, S3PRL would try to download."""
    fconf = (conf.get("frontend_conf") or {}).get("frontend_conf") or {}
    ckpt = fconf.get("path_or_url")
    if conf.get("frontend") == "s3prl" and ckpt and "://" not in str(ckpt) and not Path(ckpt).exists():
        raise EspnetError(f"{config_path}: the s3prl upstream {fconf.get('upstream')} needs its checkpoint "
                          f"{ckpt}, which does not exist: put the checkpoint there (see the comment in the config)")


def train(config: Path, task: str, seed: int, data_dir: Path, feats_dir: Path, exp_dir: Path, ngpu: int = 0,
          num_threads: int = 1, overwrite: bool = False, sets: tuple[str, str] = ("train", "val"),
          command: str | None = None, tasks_conf: Path | None = None) -> Path:
    """Collect-stats (once) and ESPnet training into ``exp_dir``; ``command`` (how it was called) goes to ``cmd``;
    the task is one of ``tasks_conf`` (default conf/tasks.yaml), recorded in backend.json for scoring."""
    config, data_dir, feats_dir, exp_dir = Path(config), Path(data_dir), Path(feats_dir), Path(exp_dir)
    if (exp_dir / "done").is_file() and not overwrite:
        LOG.info("%s is trained (done), skipped (--overwrite true retrains)", exp_dir)
        return exp_dir
    check_espnet()
    if overwrite and exp_dir.exists():
        shutil.rmtree(exp_dir)
    conf = read_config(config)
    input_kind = "audio" if conf.get("frontend") else "feats"
    if input_kind == "audio":
        check_frontend(conf, config)
    exp_dir.mkdir(parents=True, exist_ok=True)
    written = {s: write_inputs(exp_dir, s, data_dir, feats_dir, task, input_kind, tasks_conf) for s in sets}
    tr, va = (written[s] for s in sets)
    kind = tr["kind"]
    name = config.stem
    tag = feats_dir.name
    upstream = _upstream_name(feats_dir / sets[0], conf)
    info = {"backend": "espnet", "config": str(config), "head": f"espnet_{name}", "task": task, "seed": seed,
            "classes": list(get_task(task, tasks_conf).classes), "tag": tag, "upstream": upstream, "input_kind": kind,
            "input_size": tr["input_size"], "data_dir": str(data_dir), "feats_dir": str(feats_dir),
            "sets": list(sets), "espnet": REQUIRED_ESPNET, "tasks_conf": str(tasks_conf) if tasks_conf else None,
            "left_out": {s: written[s]["left_out"] for s in sets}}
    (exp_dir / "backend.json").write_text(json.dumps(info, indent=1) + "\n")
    if command:
        (exp_dir / "cmd").write_text(command + "\n")
    for s, w in written.items():
        LOG.info("%s: %d utterances of %s (%s input)%s", s, w["num_utts"], task, kind,
                 "; left out " + ", ".join(f"{k} {v}" for k, v in sorted(w["left_out"].items()))
                 if w["left_out"] else "")

    dtype = "kaldi_ark"
    data_args = []
    for phase, w in (("train", tr), ("valid", va)):
        data_args += [f"--{phase}_data_path_and_name_and_type", f"{w['dir']}/speech.scp,speech,{dtype}",
                      f"--{phase}_data_path_and_name_and_type", f"{w['dir']}/text,label,text"]
    common = ["--config", config, "--token_list", exp_dir / "data" / "token_list", "--token_type", "word",
              "--use_preprocessor", "true", "--seed", seed, *data_args]
    if tr["input_size"] is not None:
        common += ["--input_size", tr["input_size"]]
    env = _child_env(num_threads)
    log = exp_dir / "train.log"

    stats = exp_dir / "stats"
    if not (stats / "done").is_file():
        shutil.rmtree(stats, ignore_errors=True)
        # global_mvn needs the statistics being collected: collect them unnormalised (as ESPnet's recipes do)
        no_norm = ["--normalize", "none"] if conf.get("normalize") == "global_mvn" else []
        run_espnet(["espnet2.bin.cls_train", "--collect_stats", "true", *common, *no_norm, "--ngpu", "0",
                    "--train_shape_file", tr["dir"] / "speech.scp", "--valid_shape_file", va["dir"] / "speech.scp",
                    "--output_dir", stats / "logdir" / "stats.1"], log, env, "ESPnet collect-stats")
        run_espnet(["espnet2.bin.aggregate_stats_dirs", "--input_dir", stats / "logdir" / "stats.1",
                    "--output_dir", stats], log, env, "ESPnet aggregate_stats_dirs")
        (stats / "done").write_text("")

    drop_unreadable_checkpoint(exp_dir)
    train_args = ["espnet2.bin.cls_train", *common, "--resume", "true", "--output_dir", exp_dir, "--ngpu", ngpu,
                  "--fold_length", SPEECH_FOLD[kind], "--fold_length", 1]
    for phase in ("train", "valid"):
        for stream in ("speech", "label"):
            train_args += [f"--{phase}_shape_file", stats / phase / f"{stream}_shape"]
    if conf.get("normalize") == "global_mvn" and "stats_file" not in (conf.get("normalize_conf") or {}):
        train_args += ["--normalize_conf", f"stats_file={stats / 'train' / 'feats_stats.npz'}"]
    if ngpu > 1:
        # one node, one process per GPU: ESPnet spawns them and sets up DDP itself (in this mode
        # --dist_world_size is the number of nodes; ESPnet multiplies it by --ngpu)
        train_args += ["--multiprocessing_distributed", "true", "--dist_world_size", 1]
    run_espnet(train_args, log, env, "ESPnet cls_train")
    model = inference_model(exp_dir)
    (exp_dir / "done").write_text(f"{model.name}\n")
    LOG.info("%s: trained, model for scoring %s", exp_dir, model.name)
    return exp_dir


def drop_unreadable_checkpoint(exp_dir: Path) -> bool:
    """A ``checkpoint.pth`` cut short (training killed while ESPnet saved it) would stop every ``--resume``:
    remove it and the killed run's epoch files, so the training starts again from epoch 1 (with a warning)."""
    ckpt = exp_dir / "checkpoint.pth"
    if not ckpt.is_file():
        return False
    import pickle

    import torch

    try:
        # read as data: this probe never runs code a checkpoint holds (ESPnet's own resume decides about that)
        states = torch.load(ckpt, map_location="cpu", weights_only=True)
        if not isinstance(states, dict) or not {"model", "reporter", "optimizers"} <= states.keys():
            raise ValueError("not an ESPnet training checkpoint (no model/reporter/optimizers)")
        return False
    except pickle.UnpicklingError as e:
        if "Weights only load failed" in str(e):
            return False  # complete, but holds more than plain data: not cut short, so kept
        why = f"{type(e).__name__}: {e}"
    except Exception as e:  # noqa: BLE001 - whatever torch raises for a truncated file
        why = f"{type(e).__name__}: {e}"
    stale = [ckpt, *exp_dir.glob("*epoch.pth"), *exp_dir.glob("valid.*.pth"), *exp_dir.glob("train.*.pth")]
    for p in stale:
        p.unlink()
    for d in ("images", "tensorboard", "att_ws"):
        shutil.rmtree(exp_dir / d, ignore_errors=True)
    LOG.warning("%s cannot be read (%s), so ESPnet cannot resume from it: removed it and %d epoch file(s) of the "
                "killed run; training starts again from epoch 1", ckpt, why.splitlines()[0][:200], len(stale) - 1)
    return True


def _upstream_name(feats_set_dir: Path, conf: dict) -> str:
    if conf.get("frontend") == "s3prl":
        return str(((conf.get("frontend_conf") or {}).get("frontend_conf") or {}).get("upstream"))
    meta = feats_set_dir / "meta.json"
    return json.loads(meta.read_text()).get("upstream", "?") if meta.is_file() else "?"


def inference_model(exp_dir: Path) -> Path:
    """The n-best average of ESPnet's first best_model_criterion (``valid.acc.ave.pth``), else its best."""
    conf = read_yaml(exp_dir / "config.yaml")
    phase, crit, _ = (conf.get("best_model_criterion") or [["valid", "loss", "min"]])[0]
    for name in (f"{phase}.{crit}.ave.pth", f"{phase}.{crit}.best.pth"):
        if (exp_dir / name).exists():
            return exp_dir / name
    raise EspnetError(f"{exp_dir}: neither {phase}.{crit}.ave.pth nor {phase}.{crit}.best.pth: ESPnet's training "
                      f"did not finish (see {exp_dir / 'train.log'}); rerun the training to resume it")


# ---------------------------------------------------------------- scoring

def read_scores(path: Path, num_classes: int) -> dict[str, np.ndarray]:
    """cls_inference's ``prediction/score`` with --output_all_probabilities: utt -> probabilities (C,)."""
    out = {}
    for utt, value in read_table(path).items():
        probs = np.array(value.split(), dtype=np.float64)
        if probs.shape != (num_classes,):
            raise EspnetError(f"{path}: {utt}: {probs.size} scores, expected {num_classes} (one per class)")
        out[utt] = probs
    return out


def score(exp_dir: Path, sets: Sequence[str], data_dir: Path | None = None, ngpu: int = 0,
          num_threads: int = 1) -> dict[str, dict]:
    from etser.learn.score import compute_metrics, confusion_text, plot_confusion, report_text, write_predictions

    exp_dir = Path(exp_dir)
    if not (exp_dir / "done").is_file():
        raise FileNotFoundError(f"{exp_dir}/done not found: train it first (python -m etser.espnet_backend train)")
    check_espnet()
    info = json.loads((exp_dir / "backend.json").read_text())
    data_dir = Path(data_dir or info["data_dir"])
    feats_dir = Path(info["feats_dir"])
    model = inference_model(exp_dir)
    classes = info["classes"]
    results = {}
    for set_name in sets:
        start = time.monotonic()
        kind = "audio" if info["input_kind"] == "audio" else "feats"
        w = write_inputs(exp_dir, set_name, data_dir, feats_dir, info["task"], kind, info.get("tasks_conf"))
        out_dir = exp_dir / f"cls_{set_name}"
        shutil.rmtree(out_dir, ignore_errors=True)
        run_espnet(["espnet2.bin.cls_inference", "--ngpu", min(ngpu, 1),
                    "--data_path_and_name_and_type", f"{w['dir']}/speech.scp,speech,kaldi_ark",
                    "--classification_train_config", exp_dir / "config.yaml",
                    "--classification_model_file", model, "--output_dir", out_dir,
                    "--output_all_probabilities", "true"],
                   exp_dir / f"cls_{set_name}.log", _child_env(num_threads), f"ESPnet cls_inference on {set_name}")
        scores = read_scores(out_dir / "prediction" / "score", len(classes))
        utts = sorted(w["labels"])
        lost = [u for u in utts if u not in scores]
        if lost:
            raise EspnetError(f"{out_dir}/prediction/score: no scores for {len(lost)} utterance(s), first {lost[0]} "
                              f"(see {exp_dir / f'cls_{set_name}.log'})")
        probs = np.stack([scores[u] for u in utts])
        refs = [w["labels"][u] for u in utts]
        y_true = [classes.index(r) for r in refs]
        metrics = compute_metrics(y_true, probs.argmax(1), len(classes))
        metrics.update({"set": set_name, "task": info["task"], "classes": classes, "head": info["head"],
                        "seed": info["seed"], "tag": info["tag"], "upstream": info["upstream"],
                        "backend": "espnet", "model": model.name, "best_epoch": None, "left_out": w["left_out"],
                        "data_dir": str(data_dir / set_name), "feats_dir": str(feats_dir / set_name)})
        dec = exp_dir / f"decode_{set_name}"
        dec.mkdir(parents=True, exist_ok=True)
        write_predictions(dec / "predictions.txt", utts, refs, probs, classes)
        (dec / "confusion.txt").write_text(confusion_text(metrics["confusion"], classes))
        title = f"{info['tag']} {info['head']} {info['task']} seed{info['seed']} — {set_name}"
        (dec / "report.txt").write_text(report_text(metrics, classes, title))
        plot_confusion(metrics["confusion"], classes, dec / "confusion.png",
                       f"{title}\nUA {100 * metrics['ua']:.1f}  WA {100 * metrics['wa']:.1f}  "
                       f"macro-F1 {100 * metrics['macro_f1']:.1f}")
        tmp = dec / "metrics.json.tmp"
        tmp.write_text(json.dumps(metrics, indent=1) + "\n")
        tmp.replace(dec / "metrics.json")
        LOG.info("%s: %s %d utts, UA %.2f WA %.2f macro-F1 %.2f weighted-F1 %.2f (%.1f s)", exp_dir, set_name,
                 metrics["num_utts"], 100 * metrics["ua"], 100 * metrics["wa"], 100 * metrics["macro_f1"],
                 100 * metrics["weighted_f1"], time.monotonic() - start)
        results[set_name] = metrics
    return results


# ---------------------------------------------------------------- CLI

def _bool(v: str) -> bool:
    from etser.cli import str2bool
    return str2bool(v)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m etser.espnet_backend", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="collect-stats and cls_train into --exp_dir")
    t.add_argument("--config", type=Path, required=True, help="conf/espnet/<name>.yaml (ESPnet cls_train YAML)")
    t.add_argument("--task", required=True)
    t.add_argument("--tasks_conf", type=Path, default=None, help="tasks YAML (default: conf/tasks.yaml of the repo)")
    t.add_argument("--seed", type=int, default=1)
    t.add_argument("--data_dir", type=Path, default=Path("data"))
    t.add_argument("--feats_dir", type=Path, required=True, help="dump/<tag> (its name is the results' tag)")
    t.add_argument("--exp_dir", type=Path, required=True)
    t.add_argument("--ngpu", type=int, default=0)
    t.add_argument("--num_threads", type=int, default=1)
    t.add_argument("--overwrite", type=_bool, default=False)
    s = sub.add_parser("score", help="cls_inference on --sets, then decode_<set>/ as our backend writes it")
    s.add_argument("--exp_dir", type=Path, required=True)
    s.add_argument("--sets", default="val test")
    s.add_argument("--data_dir", type=Path, default=None, help="default: the training's")
    s.add_argument("--ngpu", type=int, default=0)
    s.add_argument("--num_threads", type=int, default=1)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "train":
            train(args.config, args.task, args.seed, args.data_dir, args.feats_dir, args.exp_dir, args.ngpu,
                  args.num_threads, args.overwrite,
                  command=shlex.join([sys.executable, "-m", "etser.espnet_backend", *(argv or sys.argv[1:])]),
                  tasks_conf=args.tasks_conf)
        else:
            score(args.exp_dir, args.sets.split(), args.data_dir, args.ngpu, args.num_threads)
    except (EspnetError, FileNotFoundError, ValueError) as e:
        LOG.error("%s", e)
        return 1
    return 0


def run_line(args: argparse.Namespace, argv: Sequence[str], cache: dict) -> None:
    """One line of a job file (etser.launch.run): ``train ...`` or ``score ...``; raises on failure."""
    if args.cmd == "train":
        train(args.config, args.task, args.seed, args.data_dir, args.feats_dir, args.exp_dir, args.ngpu,
              args.num_threads, args.overwrite, tasks_conf=args.tasks_conf,
              command=shlex.join([sys.executable, "-m", "etser.espnet_backend", *argv]))
    else:
        score(args.exp_dir, args.sets.split(), args.data_dir, args.ngpu, args.num_threads)


if __name__ == "__main__":
    sys.exit(main())
