#!/usr/bin/env python3
"""Time stage 1 (local/data_prep.py) on a full-size skeleton of the real EmotionTalk release.

The skeleton (19,250 utterances: four JSON each with the real uids, labels, transcripts and sentiment,
plus 0.02 s WAVs) is built from ../shared/emotiontalk-meta in a temporary folder; stage 1 then runs as the
recipe runs it (a fresh Python process). Prints utterances, seconds, utts/s and the ratio to the 60 s budget.

  bench/data_prep_fullscale.py [--meta DIR] [--keep DIR] [--runs N]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from etser.datadir import read_table  # noqa: E402
from tests.helpers_release import build_skeleton_from_meta  # noqa: E402

BUDGET_S = 60.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meta", default=str(ROOT.parent / "shared" / "emotiontalk-meta"))
    parser.add_argument("--keep", help="build the skeleton here and keep it (default: a temporary folder)")
    parser.add_argument("--runs", type=int, default=1, help="time stage 1 this many times (best and all shown)")
    args = parser.parse_args()
    if not (Path(args.meta) / "mm.csv").is_file():
        print(f"ERROR: no EmotionTalk metadata at {args.meta}", file=sys.stderr)
        return 1
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="etser_bench_"))
    try:
        db, data = work / "EmotionTalk", work / "data"
        t0 = time.perf_counter()
        n = build_skeleton_from_meta(args.meta, db)
        build_s = time.perf_counter() - t0
        print(f"skeleton: {n} utterances written in {build_s:.1f} s ({db})")
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, str(ROOT / "local" / "data_prep.py"), "--db_root", str(db),
                            "--out", str(data), "--strict", "true"], check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            times.append(time.perf_counter() - t0)
        kept = sum(len(read_table(data / s / "utt2spk")) for s in ("train", "val", "test"))
        best = min(times)
        print(f"stage 1: {kept} utterances, {best:.1f} s (runs: {', '.join(f'{t:.1f}' for t in times)}), "
              f"{kept / best:.0f} utts/s, {best / BUDGET_S:.2f} of the {BUDGET_S:.0f} s budget")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
