#!/usr/bin/env python3
"""spk2utt -> utt2spk:  spk2utt_to_utt2spk.py [spk2utt] > utt2spk   (default input: stdin)

Utterances are written in C (byte) order. An utterance listed under two speakers, or a speaker with
no utterances, is an error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # etser, also without path.sh

from etser.datadir import c_sort_key, read_table  # noqa: E402


def spk2utt_to_utt2spk(spk2utt: dict[str, str], name: str = "spk2utt") -> dict[str, str]:
    utt2spk: dict[str, str] = {}
    for spk, utts in spk2utt.items():
        for utt in utts.split():
            if utt in utt2spk:
                raise ValueError(f"{name}: utterance {utt!r} is listed under speakers "
                                 f"{utt2spk[utt]!r} and {spk!r}")
            utt2spk[utt] = spk
    return {utt: utt2spk[utt] for utt in sorted(utt2spk, key=c_sort_key)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spk2utt", nargs="?", default="/dev/stdin")
    args = parser.parse_args(argv)
    try:
        utt2spk = spk2utt_to_utt2spk(read_table(args.spk2utt, allow_empty_value=False), args.spk2utt)
    except (OSError, ValueError) as e:
        print(f"spk2utt_to_utt2spk.py: {e}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write("".join(f"{utt} {spk}\n" for utt, spk in utt2spk.items()).encode("utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
