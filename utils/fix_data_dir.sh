#!/usr/bin/env bash
# Repair a Kaldi data directory as Kaldi's fix_data_dir.sh does: sort every table under LC_ALL=C,
# keep only the utterances present (with a valid value) in every per-utterance file, drop speakers
# and recordings left without utterances, rebuild spk2utt. Changed files are copied to
# <data-dir>/.backup/ first; it prints how many utterances were removed and why (the full list goes
# to <data-dir>/.backup/removed), then validates the result (exit 1 if problems remain).
#   utils/fix_data_dir.sh [--max_listed N] [--tables conf/data_tables] <data-dir> [<data-dir> ...]
set -euo pipefail
root=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
case "${1:-}" in
    --help|-h) sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
esac
if [ "$#" -eq 0 ]; then
    echo "Usage: $0 [--max_listed N] <data-dir> [<data-dir> ...]   (--help for details)" >&2
    exit 1
fi
PYTHONPATH="${root}${PYTHONPATH:+:${PYTHONPATH}}" exec python3 -m etser.validate --fix "$@"
