#!/usr/bin/env python3
"""Split a Kaldi table (scp) into N contiguous parts of near-equal size.

  split_scp.py [--utt2spk utt2spk] in.scp out.1 ... out.N     write N files
  split_scp.py [--utt2spk utt2spk] --nj N --job J in.scp      print part J (1..N) to stdout

Parts are contiguous runs of the input, so each is sorted like the input, and the same N always gives
the same partition in both modes. With --utt2spk, each speaker's utterances stay in one part (they must
be contiguous in the input, as they are when utterance ids are prefixed by speaker ids).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # etser, also without path.sh

from etser.datadir import contiguous_parts, read_table  # noqa: E402


def split_table(scp: str, n: int, utt2spk: str | None = None) -> list[list[tuple[str, str]]]:
    """The n parts of the table scp, as lists of (key, value) in input order."""
    items = list(read_table(scp).items())
    if n < 1:
        raise ValueError(f"number of parts must be at least 1, got {n}")
    if n > len(items):
        raise ValueError(f"cannot split {scp} into {n} parts: it has only {len(items)} lines "
                         f"(more parts than lines)")
    if utt2spk is None:
        blocks = [1] * len(items)
    else:
        spk_of = read_table(utt2spk, allow_empty_value=False)
        blocks, seen, prev = [], set(), None
        for lineno, (utt, _) in enumerate(items, 1):
            spk = spk_of.get(utt)
            if spk is None:
                raise ValueError(f"{scp}:{lineno}: utterance {utt!r} is not in {utt2spk}")
            if spk == prev:
                blocks[-1] += 1
                continue
            if spk in seen:
                raise ValueError(f"{scp}:{lineno}: the utterances of speaker {spk!r} are not contiguous "
                                 f"(sort by utterance id, with utterance ids prefixed by speaker ids)")
            seen.add(spk)
            blocks.append(1)
            prev = spk
        if n > len(blocks):
            raise ValueError(f"cannot split {scp} into {n} parts by speaker: it has only {len(blocks)} "
                             f"speakers (more parts than speakers)")
    parts, start_block, start_line = [], 0, 0
    for end_block in contiguous_parts(blocks, n):
        end_line = start_line + sum(blocks[start_block:end_block])
        parts.append(items[start_line:end_line])
        start_block, start_line = end_block, end_line
    return parts


def format_lines(part: list[tuple[str, str]]) -> str:
    return "".join(f"{key} {value}\n" if value else f"{key}\n" for key, value in part)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utt2spk", help="keep each speaker's utterances in one part")
    parser.add_argument("--nj", type=int, help="number of parts (with --job: print one part to stdout)")
    parser.add_argument("--job", type=int, help="which part to print, 1..nj")
    parser.add_argument("scp", help="input table")
    parser.add_argument("outputs", nargs="*", help="output files out.1 ... out.N")
    args = parser.parse_args(argv)
    if (args.nj is None) != (args.job is None):
        parser.error("--nj and --job go together")
    if args.nj is not None and args.outputs:
        parser.error("give either output files or --nj/--job, not both")
    if args.nj is None and not args.outputs:
        parser.error("no output files given")
    if args.nj is not None and not 1 <= args.job <= args.nj:
        parser.error(f"--job must be in 1..{args.nj}, got {args.job}")
    n = args.nj if args.nj is not None else len(args.outputs)
    try:
        parts = split_table(args.scp, n, args.utt2spk)
    except (OSError, ValueError) as e:
        print(f"split_scp.py: {e}", file=sys.stderr)
        return 1
    if args.nj is not None:
        sys.stdout.buffer.write(format_lines(parts[args.job - 1]).encode("utf-8"))
        return 0
    try:
        for out, part in zip(args.outputs, parts):
            with open(out, "w", encoding="utf-8") as f:
                f.write(format_lines(part))
    except OSError as e:
        print(f"split_scp.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
