#!/usr/bin/env python3
"""utt2spk -> spk2utt:  utt2spk_to_spk2utt.py [utt2spk] > spk2utt   (default input: stdin)

Speakers and each speaker's utterances are written in C (byte) order.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # etser, also without path.sh

from etser.datadir import read_table, utt2spk_to_spk2utt  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("utt2spk", nargs="?", default="/dev/stdin")
    args = parser.parse_args(argv)
    try:
        utt2spk = read_table(args.utt2spk, allow_empty_value=False)
        for utt, spk in utt2spk.items():
            if len(spk.split()) != 1:
                raise ValueError(f"{args.utt2spk}: utterance {utt!r}: speaker {spk!r} is not one word")
    except (OSError, ValueError) as e:
        print(f"utt2spk_to_spk2utt.py: {e}", file=sys.stderr)
        return 1
    out = "".join(f"{spk} {' '.join(utts)}\n" for spk, utts in utt2spk_to_spk2utt(utt2spk).items())
    sys.stdout.buffer.write(out.encode("utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
