#!/usr/bin/env bash
# What each fix is worth: the recipe under both protocols on the same data and features (stages 1-2 once),
# then exp/official/RESULTS.md with the section that sets every model's two figures side by side.
#   local/compare_protocols.sh [run.sh options, given to both runs, e.g.
#       --fusion "attention lmf mmim" --seeds "1 2 3" --fusion_trials 0 --search_trials 0]
# The corrected runs go to exp/corrected/, the official ones to exp/official/ (so no --tag or --expdir here).
# Options that shrink the official protocol (seeds, searches) are listed under its tables as deviations.
set -euo pipefail
for arg in "$@"; do
    case "${arg}" in --tag|--expdir|--protocol|--compare_exp)
        echo "$0: ${arg} is set by this script (exp/corrected, exp/official)" >&2; exit 1 ;; esac
done
./run.sh --protocol corrected --tag corrected --caption_decoders "" "$@"
./run.sh --protocol official --tag official --stage 3 --caption_decoders "" --compare_exp exp/corrected "$@"
