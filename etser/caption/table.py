"""Print the captioning table (caption kind x decoder, mean ± std over seeds) from an experiment tree.

    python -m etser.caption.table exp/<tag> [--set test]

Reads every ``decode_<set>/metrics.json`` under the tree (decoders and baselines).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from etser.caption.score import format_table, table_rows


def caption_table(exp_root: Path, set_name: str = "test") -> str:
    files = sorted(Path(exp_root).rglob(f"decode_{set_name}/metrics.json"))
    if not files:
        raise FileNotFoundError(f"no decode_{set_name}/metrics.json under {exp_root}: score first "
                                "(python -m etser.caption.score)")
    rows = table_rows(files, set_name)
    notes = sorted({f"{k}: {v}" for r in rows for k, v in (("segmentation", r["segmentation"]),) if v})
    return format_table(rows) + "".join(f"\n{n}" for n in notes) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m etser.caption.table", description=__doc__.split("\n\n")[0])
    ap.add_argument("exp_root", type=Path)
    ap.add_argument("--set", default="test")
    args = ap.parse_args(argv)
    try:
        sys.stdout.write(caption_table(args.exp_root, args.set))
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
