#!/usr/bin/env python3
"""Keep the lines of a table whose key is in an id list (or drop them, with --exclude).

  filter_scp.py [--exclude] [-f FIELD] idlist [in.scp] > out.scp

The ids are the first field of each line of idlist; the key of an in.scp line is its field FIELD
(1-based, default 1; fields are separated by whitespace). in.scp defaults to stdin. Lines are printed
unchanged, in input order.
"""

from __future__ import annotations

import argparse
import sys


def read_ids(path: str) -> set[bytes]:
    """First field of every non-blank line."""
    with open(path, "rb") as f:
        return {line.split(None, 1)[0] for line in f if line.strip()}


def filter_lines(ids: set[bytes], lines, field: int = 1, exclude: bool = False, name: str = "input"):
    """Yield the lines (bytes, newline kept) whose field-th field is (not, with exclude) in ids."""
    for lineno, line in enumerate(lines, 1):
        fields = line.split()
        if len(fields) < field:
            raise ValueError(f"{name}:{lineno}: has {len(fields)} fields, key field {field} requested")
        if (fields[field - 1] in ids) != exclude:
            yield line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exclude", action="store_true", help="drop the listed keys instead of keeping them")
    parser.add_argument("-f", "--field", type=int, default=1, help="1-based field of in.scp holding the key")
    parser.add_argument("idlist")
    parser.add_argument("scp", nargs="?", default="-", help="input table (default: stdin)")
    args = parser.parse_args(argv)
    if args.field < 1:
        parser.error(f"-f must be at least 1, got {args.field}")
    try:
        ids = read_ids(args.idlist)
        src = sys.stdin.buffer if args.scp == "-" else open(args.scp, "rb")
        with src:
            name = "stdin" if args.scp == "-" else args.scp
            out = sys.stdout.buffer
            for line in filter_lines(ids, src, args.field, args.exclude, name):
                out.write(line if line.endswith(b"\n") else line + b"\n")
    except (OSError, ValueError) as e:
        print(f"filter_scp.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
