#!/usr/bin/env bash
# Check a Kaldi data directory against Kaldi's rules (sorted unique keys under LC_ALL=C, identical
# utterance sets across per-utterance files, spk2utt consistent with utt2spk, utterance ids prefixed
# by speaker ids, printable UTF-8 text, required values present). Prints one summary line when valid;
# otherwise every problem with its file and line, and exits 1.
#   utils/validate_data_dir.sh [--max_listed N] [--tables conf/data_tables] <data-dir> [<data-dir> ...]
# --tables: the corpus's own tables (value rules, tables that may leave utterances out); see etser/validate.py.
# The work is done by etser/validate.py (stdlib only).
set -euo pipefail
root=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
case "${1:-}" in
    --help|-h) sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
esac
if [ "$#" -eq 0 ]; then
    echo "Usage: $0 [--max_listed N] <data-dir> [<data-dir> ...]   (--help for details)" >&2
    exit 1
fi
PYTHONPATH="${root}${PYTHONPATH:+:${PYTHONPATH}}" exec python3 -m etser.validate "$@"
