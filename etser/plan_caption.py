"""Job planning for captioning in stages 3 and 4: caption kind x decoder x seed, and the two baselines.

    python -m etser.plan_caption train --feats_dir dump/<tag> --decoders "transformer" \\
        --kinds "speaker style emotion overall" --seeds "1" --out exp/caption_train_jobs.txt
    python -m etser.plan_caption score ... (same options) --baselines true --sets "train val test" \\
        --out exp/caption_score_jobs.txt

Stage 3 lines are arguments of ``python -m etser.caption.train`` (run through ``--job_list``), stage 4 lines
of ``python -m etser.caption.score``.  Exp dirs: ``<exp_root>/caption/<tag>/<decoder>/<kind>/seed<S>`` and
``<exp_root>/caption/<tag>/baseline_<name>/<kind>`` (one level deeper than the classifiers'
``exp/<tag>/<head>/<task>/seed<S>``, so that neither results table reads the other's metrics.json).

Everything a job would fail on is checked here, before any job: the kinds, each decoder's
``<conf_dir>/<decoder>.yaml`` and its local Hugging Face dir, frame-level features of the train and valid
sets, and the train set's caption file of every kind.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Sequence

from etser.caption import KINDS
from etser.caption.metrics import load_metrics_config
from etser.cli import str2bool
from etser.featset import read_meta
from etser.plan import PlanError, check_decoders, check_train_sets, check_trained, score_sets

BASELINES = ("frequent", "nearest")


def exp_dir(exp_root: str, tag: str, system: str, kind: str, seed: int | None = None) -> str:
    base = f"{exp_root}/caption/{tag}/{system}/{kind}"
    return base if seed is None else f"{base}/seed{seed}"


def check_inputs(feats_dir: Path, data_dir: Path, kinds: Sequence[str], upstream: str = "",
                 sets: Sequence[str] = ("train", "val")) -> None:
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise PlanError(f"caption kinds {' '.join(unknown) or '(none)'}: use some of {' '.join(KINDS)}")
    for s in sets:
        meta = read_meta(feats_dir / s)
        if not meta.get("frame_layers") or not (feats_dir / s / "frames.scp").is_file():
            conf = f"conf/upstream/{upstream}.yaml" if upstream else "the upstream config"
            raise PlanError(f"{feats_dir / s} has no frame-level features (frames.scp), which captioning needs: "
                            f"set frames: {{layers: all}} in {conf} and rerun stage 2")
    for k in kinds:
        path = data_dir / sets[0] / f"utt2caption_{k}"
        if not path.is_file():
            raise PlanError(f"{path} not found: the release has no {k} captions (stage 1 writes utt2caption_<kind> "
                            "from the Audio JSON sourceAttr); choose --caption_kinds among those found")


def train_lines(feats_dir: str, decoders: Sequence[str], kinds: Sequence[str], seeds: Sequence[int], conf_dir: str,
                data_dir: str, exp_root: str, ngpu: int, num_threads: int, overwrite: bool) -> list[str]:
    tag = Path(feats_dir).name
    return [shlex.join(["--config", f"{conf_dir}/{dec}.yaml", "--kind", kind, "--seed", str(seed), "--data_dir",
                        data_dir, "--feats_dir", feats_dir, "--exp_dir", exp_dir(exp_root, tag, dec, kind, seed),
                        "--ngpu", str(ngpu), "--num_threads", str(num_threads), "--overwrite", str(overwrite).lower()])
            for kind in kinds for dec in decoders for seed in seeds]


def score_lines(feats_dir: str, decoders: Sequence[str], kinds: Sequence[str], seeds: Sequence[int],
                baselines: bool, sets: Sequence[str], data_dir: str, exp_root: str, ngpu: int,
                metrics_config: str) -> list[str]:
    tag = Path(feats_dir).name
    common = ["--sets", " ".join(sets), "--data_dir", data_dir, "--feats_dir", feats_dir,
              "--metrics_config", metrics_config]
    lines = []
    for kind in kinds:
        for dec in decoders:
            for seed in seeds:
                lines.append(shlex.join(["--exp_dir", exp_dir(exp_root, tag, dec, kind, seed), *common,
                                         "--ngpu", str(ngpu)]))
        if baselines:
            for b in BASELINES:
                lines.append(shlex.join(["--baseline", b, "--kind", kind, "--exp_dir",
                                         exp_dir(exp_root, tag, f"baseline_{b}", kind), *common]))
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m etser.plan_caption", description=__doc__.split("\n\n")[0])
    ap.add_argument("cmd", choices=("train", "score"))
    ap.add_argument("--feats_dir", required=True, help="dump/<tag> of the caption upstream")
    ap.add_argument("--upstream", default="", help="its name (for messages)")
    ap.add_argument("--decoders", required=True, help="space-separated: names of <conf_dir>/<decoder>.yaml")
    ap.add_argument("--kinds", default=" ".join(KINDS))
    ap.add_argument("--seeds", default="1")
    ap.add_argument("--baselines", type=str2bool, default=True)
    ap.add_argument("--sets", default="train val test")
    ap.add_argument("--conf_dir", default="conf/caption")
    ap.add_argument("--metrics_config", default="conf/caption/metrics.yaml")
    ap.add_argument("--data_dir", default="data")
    ap.add_argument("--exp_root", default="exp")
    ap.add_argument("--ngpu", type=int, default=0)
    ap.add_argument("--num_threads", type=int, default=1)
    ap.add_argument("--overwrite", type=str2bool, default=False)
    ap.add_argument("--check_trained", type=str2bool, default=False,
                    help="score: refuse when a decoder's training is not finished (run.sh: stage 4 after stage 3)")
    ap.add_argument("--out", type=Path, required=True, help="the job file to write")
    a = ap.parse_args(argv)
    decoders, kinds, sets = a.decoders.split(), a.kinds.split(), a.sets.split()
    try:
        seeds = [int(s) for s in a.seeds.split()]
        if not seeds:
            raise PlanError("no caption seed given")
        check_train_sets(sets)
        check_decoders(decoders, Path(a.conf_dir))
        check_inputs(Path(a.feats_dir), Path(a.data_dir), kinds, a.upstream)
        if a.cmd == "train":
            lines = train_lines(a.feats_dir, decoders, kinds, seeds, a.conf_dir, a.data_dir, a.exp_root, a.ngpu,
                                a.num_threads, a.overwrite)
        else:
            load_metrics_config(Path(a.metrics_config))
            if a.check_trained:
                tag = Path(a.feats_dir).name
                check_trained([exp_dir(a.exp_root, tag, d, k, s) for k in kinds for d in decoders for s in seeds])
            lines = score_lines(a.feats_dir, decoders, kinds, seeds, a.baselines, score_sets(sets), a.data_dir,
                                a.exp_root, a.ngpu, a.metrics_config)
    except (PlanError, ValueError, FileNotFoundError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.out.with_name(a.out.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in lines))
    tmp.replace(a.out)
    what = "trainings" if a.cmd == "train" else "scorings"
    print(f"{len(lines)} caption {what}: kinds {' '.join(kinds)}; decoders {' '.join(decoders)}; seeds "
          f"{' '.join(map(str, seeds))}" + ("; baselines " + " ".join(BASELINES) if a.cmd == "score" and a.baselines
                                             else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
