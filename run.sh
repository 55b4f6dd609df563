#!/usr/bin/env bash
# EmotionTalk speech emotion recognition recipe (Kaldi/ESPnet style).
#   ./run.sh                         # whole recipe on the embedded mini corpus (generated in stage 1)
#   ./run.sh --db_root /data/EmotionTalk --upstream hubert_base --stage 2
# Stages: 1 data prep -> data/   2 upstream features -> dump/   3 training -> exp/
#         4 scoring -> exp/.../decode_*/   5 results -> exp/RESULTS.md
# Outputs go under the current working directory; run from the repo root or from egs/emotiontalk/.
set -euo pipefail

log() { echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${0##*/}:${BASH_LINENO[0]}) $*" >&2; }

# The whole recipe is one compound command: bash reads it completely before running it, so editing run.sh
# while a long run is going on cannot change or break that run (the edit applies to the next run).
{

# ---- options (override with --name value; see utils/parse_options.sh) ----
stage=1
stop_stage=5
db_root=            # extracted EmotionTalk release; empty: generate and use the mini corpus
mini_dir=downloads/mini_emotiontalk   # where the mini corpus is generated when db_root is empty
strict=false        # true: any excluded utterance in stage 1 is an error
sets="train val test"
# S3PRL fbank without per-utterance CMVN: S3PRL's "fbank" normalises mean and variance of every
# utterance, so its pooled mean/std are constant and pooled heads learn nothing (docs/training.md).
upstream=fbank_no_cmvn   # conf/upstream/<upstream>.yaml
nj=4                # parallel jobs (feature extraction; at most this many training/scoring jobs)
ngpu=0              # GPUs per extraction/training job (0: CPU)
num_threads=1       # CPU threads per job
heads=superb        # conf/train/<head>.yaml, several allowed
tasks="speech_four multi_four speech_all multi_all"
seeds="1 2 3"
cmd_backend=${cmd_backend:-local}   # local | slurm (cmd.sh)
overwrite=false     # true: redo stages whose outputs exist
python=python3

help_message=$(cat <<HELP
Usage: $0 [options]
  --stage N / --stop_stage N   stages to run (1 data, 2 features, 3 train, 4 score, 5 results)
  --db_root DIR                extracted EmotionTalk release (default: generate the mini corpus)
  --upstream NAME              conf/upstream/NAME.yaml (default: ${upstream})
  --heads "A B"                conf/train/A.yaml ... (default: ${heads})
  --tasks "T ..."              default: ${tasks}
  --seeds "1 2 3"              training seeds
  --nj N (parallel jobs of stages 2-4) --ngpu N --num_threads N --cmd_backend local|slurm --strict true|false --overwrite true|false
  --config FILE                read options from a file of name=value lines
HELP
)

# A fresh clone has no Python environment: make <repo>/.venv first (a no-op once it matches
# requirements.txt). ETSER_PYTHON_ENV=system uses the python3 on PATH instead (e.g. a conda env).
if [ "${ETSER_PYTHON_ENV:-venv}" = venv ]; then
    utils/setup_env.sh
fi
# shellcheck disable=SC1091
. ./path.sh
# shellcheck disable=SC1091
. utils/parse_options.sh
# shellcheck disable=SC1091
. ./cmd.sh

if [ "$#" -ne 0 ]; then
    log "unexpected arguments: $*"; echo "${help_message}" >&2; exit 1
fi
# a stage that is not a number would make every `[ -le ]` below false: nothing run, yet "Successfully finished"
if ! [[ "${stage}" =~ ^[0-9]+$ && "${stop_stage}" =~ ^[0-9]+$ ]] \
    || [ "${stage}" -gt "${stop_stage}" ] || [ "${stage}" -lt 1 ] || [ "${stop_stage}" -gt 5 ]; then
    log "ERROR: --stage ${stage} --stop_stage ${stop_stage}: stages are 1 to 5 and stage <= stop_stage"; exit 1
fi

# ---- one run.sh at a time per working directory: two would interleave writes to data/ dump/ exp/ ----
# The lock is held until this script and every job it started have exited (they inherit fd 9).
mkdir -p exp
run_lock=exp/.run.lock
if command -v flock >/dev/null 2>&1; then
    exec 9>>"${run_lock}"
    if ! flock -n 9; then
        log "ERROR: another run.sh is already running in $(pwd) (${run_lock}):"
        log "  $(cat "${run_lock}" 2>/dev/null || echo 'holder unknown')"
        log "Wait for it to finish or stop it; this one changes nothing."
        exit 1
    fi
    echo "pid $$ on $(hostname) since $(date '+%F %T'): $(tr '\0' ' ' 2>/dev/null < /proc/$$/cmdline || echo "$0")" \
        > "${run_lock}"
else
    log "WARNING: flock not found: not guarding against a second run.sh in this directory"
fi

# ---- stage 1: EmotionTalk release -> Kaldi data dirs ----
if [ "${stage}" -le 1 ] && [ "${stop_stage}" -ge 1 ]; then
    if [ -z "${db_root}" ]; then
        db_root=${mini_dir}
        log "Stage 1: no --db_root given: generating the mini corpus in ${db_root}"
        ${python} local/make_mini_corpus.py --out "${db_root}"
    fi
    log "Stage 1: data preparation from ${db_root} into data/{${sets// /,}}"
    ${python} local/data_prep.py --db_root "${db_root}" --out data --strict "${strict}" --sets "${sets}"
    for x in ${sets}; do
        utils/validate_data_dir.sh --tables conf/data_tables "data/${x}"
    done
fi

# ---- stage 2: upstream features -> dump/<tag>/<set> (issue 3) ----
# <tag> = <upstream>_<hash of the config>: a changed config never reuses old features. Jobs that finished
# are skipped on a rerun and unfinished ones redone; pooled_mean.scp appears only when the set is complete.
if [ "${stage}" -le 2 ] && [ "${stop_stage}" -ge 2 ]; then
    upstream_conf=conf/upstream/${upstream}.yaml
    # --check_ckpt: a missing checkpoint stops here with what to download, not in each of the nj jobs
    tag=$(${python} -m etser.upstream tag "${upstream}" --conf_dir conf/upstream --check_ckpt)
    if [ "${ngpu}" -gt 0 ]; then extract_cmd=${cuda_cmd}; else extract_cmd=${train_cmd}; fi
    for x in ${sets}; do
        dir=dump/${tag}/${x}
        if [ -f "${dir}/pooled_mean.scp" ] && [ "${overwrite}" != true ]; then
            # complete features of other utterances than data/ now holds (stage 1 rerun on other data) are stale
            if ! cmp -s <(cut -d' ' -f1 "data/${x}/wav.scp") <(cut -d' ' -f1 "${dir}/pooled_mean.scp"); then
                log "ERROR: ${dir} holds features of other utterances than data/${x}/wav.scp (was stage 1 rerun" \
                    "on other data?); rerun stage 2 with --overwrite true to extract them again"
                exit 1
            fi
            log "Stage 2: ${dir} is complete, skipped (--overwrite true redoes it)"
            continue
        fi
        if [ "${overwrite}" = true ]; then rm -rf "${dir}"; fi
        log "Stage 2: ${upstream} features of data/${x} -> ${dir} (${nj} jobs, logs in ${dir}/log)"
        mkdir -p "${dir}/log"
        # shellcheck disable=SC2086
        ${extract_cmd} --num_threads "${num_threads}" JOB=1:"${nj}" "${dir}/log/extract.JOB.log" \
            ${python} -m etser.extract job --config "${upstream_conf}" --data "data/${x}" --dir "${dir}" \
                --nj "${nj}" --job JOB --ngpu "${ngpu}" --num_threads "${num_threads}"
        ${python} -m etser.extract merge --config "${upstream_conf}" --name "${upstream}" \
            --data "data/${x}" --dir "${dir}" --nj "${nj}"
    done
fi

# ---- stage 3: downstream training (issue 4) ----
# One training per head x task x seed into exp/<tag>/<head>/<task>/seed<N>/, listed in a job file and shared
# out among ${nj} jobs (each runs its lines in one process). Finished trainings are skipped, killed ones
# resume from their last epoch checkpoint; --overwrite true retrains.
if [ "${stage}" -le 3 ] && [ "${stop_stage}" -ge 3 ]; then
    tag=$(${python} -m etser.upstream tag "${upstream}" --conf_dir conf/upstream)
    feats_dir=dump/${tag}
    for x in train val; do
        if [ ! -f "${feats_dir}/${x}/pooled_mean.scp" ]; then
            log "Stage 3: ${feats_dir}/${x} has no features: run stage 2 for --upstream ${upstream} first"; exit 1
        fi
    done
    if ! ${python} -c "import json, sys; sys.exit(0 if json.load(open('${feats_dir}/train/meta.json')).get('pooled_stats_informative', True) else 1)"; then
        log "WARNING: the pooled statistics of ${tag} are the same for every utterance (per-utterance CMVN):" \
            "pooled heads (superb, paper) cannot learn from them; use --upstream fbank_no_cmvn, or frames with --heads attentive"
    fi
    mkdir -p "exp/${tag}/log"
    train_jobs=exp/${tag}/train_jobs.txt
    : > "${train_jobs}"
    for head in ${heads}; do
        [ -f "conf/train/${head}.yaml" ] || { log "Stage 3: no conf/train/${head}.yaml"; exit 1; }
        for task in ${tasks}; do
            for seed in ${seeds}; do
                echo "--config conf/train/${head}.yaml --task ${task} --seed ${seed} --data_dir data" \
                     "--feats_dir ${feats_dir} --exp_dir exp/${tag}/${head}/${task}/seed${seed}" \
                     "--ngpu ${ngpu} --num_threads ${num_threads} --overwrite ${overwrite}" >> "${train_jobs}"
            done
        done
    done
    n=$(wc -l < "${train_jobs}"); train_nj=$(( n < nj ? n : nj ))
    log "Stage 3: ${n} trainings (heads: ${heads}; tasks: ${tasks}; seeds: ${seeds}) on ${feats_dir} in ${train_nj} jobs, logs exp/${tag}/log/train.*.log"
    if [ "${ngpu}" -gt 0 ]; then job_cmd=${cuda_cmd}; else job_cmd=${train_cmd}; fi
    # shellcheck disable=SC2086
    ${job_cmd} --num_threads "${num_threads}" JOB=1:"${train_nj}" "exp/${tag}/log/train.JOB.log" \
        ${python} -m etser.train --job_list "${train_jobs}" --job JOB --num_jobs "${train_nj}"
fi

# ---- stage 4: scoring (issue 4) ----
# Best checkpoint of every training on val and test -> exp/<tag>/<head>/<task>/seed<N>/decode_{val,test}/.
if [ "${stage}" -le 4 ] && [ "${stop_stage}" -ge 4 ]; then
    tag=$(${python} -m etser.upstream tag "${upstream}" --conf_dir conf/upstream)
    mkdir -p "exp/${tag}/log"
    score_jobs=exp/${tag}/score_jobs.txt
    : > "${score_jobs}"
    for head in ${heads}; do
        for task in ${tasks}; do
            for seed in ${seeds}; do
                echo "--sets 'val test' --ngpu ${ngpu} exp/${tag}/${head}/${task}/seed${seed}" >> "${score_jobs}"
            done
        done
    done
    # scoring one training takes well under a second after ~5 s of imports: about six per job
    n=$(wc -l < "${score_jobs}"); score_nj=$(( (n + 5) / 6 )); score_nj=$(( score_nj < nj ? score_nj : nj ))
    log "Stage 4: scoring ${n} trainings of exp/${tag} on val and test in ${score_nj} jobs, logs exp/${tag}/log/score.*.log"
    if [ "${ngpu}" -gt 0 ]; then job_cmd=${cuda_cmd}; else job_cmd=${train_cmd}; fi
    # shellcheck disable=SC2086
    ${job_cmd} --num_threads "${num_threads}" JOB=1:"${score_nj}" "exp/${tag}/log/score.JOB.log" \
        ${python} -m etser.score --job_list "${score_jobs}" --job JOB --num_jobs "${score_nj}"
fi

# ---- stage 5: results (issue 4) ----
# exp/RESULTS.md from every exp/*/*/*/seed*/decode_test/metrics.json (all upstreams and heads so far).
if [ "${stage}" -le 5 ] && [ "${stop_stage}" -ge 5 ]; then
    log "Stage 5: exp/RESULTS.md from all scored experiments under exp/"
    ${python} -m etser.results --exp exp --out exp/RESULTS.md
fi

log "Successfully finished stages ${stage}-${stop_stage}"
exit 0
}
