#!/usr/bin/env python3
"""Stage 1: an extracted EmotionTalk release -> Kaldi data dirs <out>/{train,val,test} and <out>/stats.md.

Usage: local/data_prep.py --db_root DIR --out data [--strict true|false] [--sets train val test]
Exit status 1 when nothing usable is found, a set is empty, or (--strict true) any utterance is excluded.
See local/emotiontalk/release.py for the rules.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from etser.cli import str2bool  # noqa: E402
from etser.datadir import printable  # noqa: E402
from emotiontalk.release import SETS, DataPrepError, exclusion_summary, figures_line, prepare  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db_root", required=True, help="folder where the EmotionTalk tars were extracted")
    parser.add_argument("--out", default="data", help="output folder (default: data)")
    parser.add_argument("--strict", type=str2bool, default=False, help="true: any excluded utterance is an error")
    parser.add_argument("--sets", nargs="+", default=list(SETS),
                        help="sets to write (default: train val test; one quoted list also works)")
    args = parser.parse_args(argv)
    sets = [s for item in args.sets for s in item.split()]
    try:
        result = prepare(args.db_root, args.out, sets=sets, strict=args.strict)
    except DataPrepError as e:
        print(f"ERROR: local/data_prep.py: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # e.g. a full disk while the exclusion lists are written: one line, no traceback
        print(f"ERROR: local/data_prep.py: cannot write {printable(e.filename or args.out)}: {e.strerror or e}",
              file=sys.stderr)
        return 1
    print(result.stats, end="")
    if result.exclusions:
        print(f"WARNING: {exclusion_summary(result.exclusions)}; see {Path(args.out) / 'excluded'}",
              file=sys.stderr)
    print(figures_line(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
