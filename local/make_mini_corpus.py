#!/usr/bin/env python3
"""Generate the embedded mini corpus: a small synthetic EmotionTalk release (see local/emotiontalk/minicorpus.py).

Usage: local/make_mini_corpus.py --out DIR [--seed 0] [--scale 1.0]

600 utterances at scale 1.0 (40 per group, all 15 groups), about 20 minutes of audio and an mp4 video
per utterance, ~140 MB, 3,600 files.  When DIR already holds a complete corpus made with the same seed, scale and generator version, it
says so and exits.  Otherwise the corpus is written to a temporary folder beside DIR and renamed at the
end, so an interrupted run never leaves half a corpus.  A non-empty DIR that is not a mini corpus is
never overwritten.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emotiontalk.minicorpus import make_mini_corpus  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder to hold the release (made if absent)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="size factor: 40*scale utterances per group (default: 1.0; range (0, 20])")
    args = parser.parse_args(argv)
    try:
        make_mini_corpus(args.out, seed=args.seed, scale=args.scale)
    except (FileExistsError, ValueError) as e:
        print(f"ERROR: local/make_mini_corpus.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
