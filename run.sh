#!/usr/bin/env bash
# EmotionTalk emotion recognition recipe (Kaldi/ESPnet style): speech, text and visual upstreams.
#   ./run.sh                         # whole recipe on the embedded mini corpus (generated in stage 1)
#   ./run.sh --db_root /data/EmotionTalk --upstreams "hubert_base wavlm_base" --stage 2
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
# conf/upstream/<name>.yaml, one per modality by default: the no-download speech, text and visual baselines.
# S3PRL fbank without per-utterance CMVN: S3PRL's "fbank" normalises mean and variance of every
# utterance, so its pooled mean/std are constant and pooled heads learn nothing (docs/training.md).
upstreams="fbank_no_cmvn text_baseline visual_baseline"
upstream=           # alias of --upstreams for a single one
nj=4                # parallel jobs (feature extraction; at most this many training/scoring jobs)
ngpu=0              # GPUs per extraction/training job (0: CPU)
num_threads=1       # CPU threads per job
backend=ours        # ours: etser.train/etser.score; espnet: etser.espnet_backend
heads=superb        # conf/train/<head>.yaml (conf/espnet/<head>.yaml for --backend espnet), several allowed
tasks=              # empty: each upstream's modality's default list in the tasks conf
tasks_conf=conf/tasks.yaml
results_conf=conf/results.yaml
seeds="1 2 3"
cmd_backend=${cmd_backend:-local}   # local | slurm (cmd.sh)
overwrite=false     # true: redo stages whose outputs exist
python=python3
# captioning (stages 3-5; docs/captioning.md): runs when --tasks is empty (the default) or names "caption"
caption_decoders="transformer"   # conf/caption/<name>.yaml: transformer gpt2 qwen2 bart
caption_kinds="speaker style emotion overall"
caption_upstream=fbank_no_cmvn   # a speech upstream whose config dumps frames (frames: {layers: ...})
caption_seeds=1
caption_baselines=true           # also score the most frequent caption and the nearest training utterance's

help_message=$(cat <<HELP
Usage: $0 [options]
  --stage N / --stop_stage N   stages to run (1 data, 2 features, 3 train, 4 score, 5 results) (default: ${stage}-${stop_stage})
  --db_root DIR                extracted EmotionTalk release (default: generate the mini corpus in --mini_dir)
  --mini_dir DIR               where the mini corpus is generated (default: ${mini_dir})
  --strict true|false          stage 1: any excluded utterance is an error (default: ${strict})
  --sets "A B"                 data sets of every stage (default: ${sets}); stage 3 trains on train, selects on val;
                               stage 4 scores every set but train
  --upstreams "A B"            conf/upstream/A.yaml ... (default: ${upstreams})
  --upstream NAME              one upstream (alias of --upstreams NAME)
  --backend ours|espnet        stage 3/4 implementation (default: ${backend})
  --heads "A B"                conf/train/A.yaml ... or conf/espnet/A.yaml (default: ${heads})
  --tasks "T ..."              tasks of every upstream (default: each upstream's modality's list in --tasks_conf)
  --tasks_conf FILE            tasks YAML (default: ${tasks_conf})
  --results_conf FILE          RESULTS.md tables YAML (default: ${results_conf})
  --seeds "1 2 3"              training seeds (default: ${seeds})
  --nj N                       parallel jobs of stages 2-4 (default: ${nj})
  --ngpu N                     GPUs per job, 0: CPU (default: ${ngpu})
  --num_threads N              CPU threads per job (default: ${num_threads})
  --cmd_backend local|slurm    job launcher (default: ${cmd_backend})
  --overwrite true|false       redo stages whose outputs exist (default: ${overwrite})
  --python CMD                 Python interpreter (default: ${python})
  --caption_decoders "A B"     captioning decoders, conf/caption/A.yaml (default: ${caption_decoders}); captioning
                               runs when --tasks is empty or names "caption" (--tasks caption: captioning only)
  --caption_kinds "A B"        caption kinds (default: ${caption_kinds})
  --caption_upstream NAME      speech upstream whose frames the captioners read (default: ${caption_upstream})
  --caption_seeds "1 2"        captioning seeds (default: ${caption_seeds})
  --caption_baselines true|false  score the frequent-caption and nearest-utterance baselines (default: ${caption_baselines})
  --config FILE                read options from a file of name=value lines
HELP
)

# Options first: --help answers before any environment is made.
# shellcheck disable=SC1091
. utils/parse_options.sh

if [ "$#" -ne 0 ]; then
    log "unexpected arguments: $*"; echo "${help_message}" >&2; exit 1
fi
# a stage that is not a number would make every `[ -le ]` below false: nothing run, yet "Successfully finished"
if ! [[ "${stage}" =~ ^[0-9]+$ && "${stop_stage}" =~ ^[0-9]+$ ]] \
    || [ "${stage}" -gt "${stop_stage}" ] || [ "${stage}" -lt 1 ] || [ "${stop_stage}" -gt 5 ]; then
    log "ERROR: --stage ${stage} --stop_stage ${stop_stage}: stages are 1 to 5 and stage <= stop_stage"; exit 1
fi
if [ -n "${upstream}" ]; then upstreams=${upstream}; fi
if [ -z "${upstreams// /}" ]; then log "ERROR: --upstreams is empty"; exit 1; fi
case "${backend}" in ours|espnet) ;; *) log "ERROR: --backend ${backend}: ours or espnet"; exit 1 ;; esac
# captioning: on by default and with --tasks "... caption"; "caption" is not a classifier task
caption=false; classify=true
case " ${tasks} " in *" caption "*) caption=true; tasks=$(echo " ${tasks} " | sed 's/ caption / /g; s/^ *//; s/ *$//')
    if [ -z "${tasks}" ]; then classify=false; fi ;; esac
if [ -z "${tasks// /}" ] && [ "${classify}" = true ]; then caption=true; fi
if [ -z "${caption_decoders// /}" ] || [ -z "${caption_kinds// /}" ]; then caption=false; fi
stage2_upstreams=${upstreams}
if [ "${caption}" = true ]; then
    if [ "${classify}" = false ]; then stage2_upstreams=${caption_upstream}; fi
    case " ${stage2_upstreams} " in *" ${caption_upstream} "*) ;; *) stage2_upstreams="${stage2_upstreams} ${caption_upstream}" ;; esac
fi

# A fresh clone has no Python environment: make <repo>/.venv first (a no-op once it matches
# requirements.txt). ETSER_PYTHON_ENV=system uses the python3 on PATH instead (e.g. a conda env).
if [ "${ETSER_PYTHON_ENV:-venv}" = venv ]; then
    utils/setup_env.sh
fi
# shellcheck disable=SC1091
. ./path.sh
# shellcheck disable=SC1091
. ./cmd.sh

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

# ---- stage 2: upstream features -> dump/<tag>/<set>, for every upstream ----
# <tag> = <upstream>_<hash of the config>: a changed config never reuses old features. Jobs that finished
# are skipped on a rerun and unfinished ones redone; pooled_mean.scp appears only when the set is complete.
if [ "${stage}" -le 2 ] && [ "${stop_stage}" -ge 2 ]; then
  for upstream in ${stage2_upstreams}; do
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
  done
fi

# dump/<tag> of every upstream (stages 3 and 4)
feats_dirs() {
    local up tag out=""
    for up in ${upstreams}; do
        tag=$(${python} -m etser.upstream tag "${up}" --conf_dir conf/upstream) || return 1
        out="${out} dump/${tag}"
    done
    echo "${out# }"
}
# the job files of stages 3 and 4: upstream x head x task x seed, planned in one place (etser.plan)
plan_jobs() {  # plan_jobs train|score OUT FEATS_DIRS
    ${python} -m etser.plan "$1" --out "$2" --feats_dirs "$3" --heads "${heads}" --seeds "${seeds}" \
        --tasks "${tasks}" --sets "${sets}" --backend "${backend}" --tasks_conf "${tasks_conf}" --data_dir data \
        --exp_root exp --ngpu "${ngpu}" --num_threads "${num_threads}" --overwrite "${overwrite}"
}
if [ "${ngpu}" -gt 0 ]; then job_cmd=${cuda_cmd}; else job_cmd=${train_cmd}; fi

# ---- stage 3: downstream training ----
# One training per upstream x head x task x seed into exp/<tag>/<head>/<task>/seed<N>/, listed in
# exp/train_jobs.txt and shared out among ${nj} jobs (each runs its lines in one process; --backend espnet:
# one job per training). Finished trainings are skipped, killed ones resume from their last epoch
# checkpoint; --overwrite true retrains.
if [ "${stage}" -le 3 ] && [ "${stop_stage}" -ge 3 ] && [ "${classify}" = true ]; then
    fdirs=$(feats_dirs)
    for up in ${upstreams}; do
        tag=$(${python} -m etser.upstream tag "${up}" --conf_dir conf/upstream)
        for x in train val; do
            if [ ! -f "dump/${tag}/${x}/pooled_mean.scp" ]; then
                log "Stage 3: dump/${tag}/${x} has no features: run stage 2 for --upstream ${up} first"; exit 1
            fi
        done
    done
    mkdir -p exp/log
    train_jobs=exp/train_jobs.txt
    plan_jobs train "${train_jobs}" "${fdirs}"
    n=$(wc -l < "${train_jobs}")
    if [ "${backend}" = ours ]; then
        train_nj=$(( n < nj ? n : nj ))
        log "Stage 3: ${n} trainings (upstreams: ${upstreams}; heads: ${heads}; seeds: ${seeds}) in ${train_nj} jobs, logs exp/log/train.*.log"
        # shellcheck disable=SC2086
        ${job_cmd} --num_threads "${num_threads}" JOB=1:"${train_nj}" "exp/log/train.JOB.log" \
            ${python} -m etser.train --job_list "${train_jobs}" --job JOB --num_jobs "${train_nj}"
    else
        log "Stage 3: ${n} ESPnet trainings (upstreams: ${upstreams}; heads: ${heads}; seeds: ${seeds}), logs exp/log/train.*.log"
        # shellcheck disable=SC2086
        ${job_cmd} --num_threads "${num_threads}" --max_jobs_run "${nj}" JOB=1:"${n}" "exp/log/train.JOB.log" \
            ${python} -m etser.plan run_line --job_list "${train_jobs}" --job JOB --module etser.espnet_backend
    fi
fi

# ---- stage 4: scoring ----
# Best checkpoint of every training on every set but train -> exp/<tag>/<head>/<task>/seed<N>/decode_<set>/.
if [ "${stage}" -le 4 ] && [ "${stop_stage}" -ge 4 ] && [ "${classify}" = true ]; then
    fdirs=$(feats_dirs)
    mkdir -p exp/log
    score_jobs=exp/score_jobs.txt
    plan_jobs score "${score_jobs}" "${fdirs}"
    n=$(wc -l < "${score_jobs}")
    if [ "${backend}" = ours ]; then
        # scoring one training takes well under a second after ~5 s of imports: about six per job
        score_nj=$(( (n + 5) / 6 )); score_nj=$(( score_nj < nj ? score_nj : nj ))
        log "Stage 4: scoring ${n} trainings in ${score_nj} jobs, logs exp/log/score.*.log"
        # shellcheck disable=SC2086
        ${job_cmd} --num_threads "${num_threads}" JOB=1:"${score_nj}" "exp/log/score.JOB.log" \
            ${python} -m etser.score --job_list "${score_jobs}" --job JOB --num_jobs "${score_nj}"
    else
        log "Stage 4: scoring ${n} ESPnet trainings, logs exp/log/score.*.log"
        # shellcheck disable=SC2086
        ${job_cmd} --num_threads "${num_threads}" --max_jobs_run "${nj}" JOB=1:"${n}" "exp/log/score.JOB.log" \
            ${python} -m etser.plan run_line --job_list "${score_jobs}" --job JOB --module etser.espnet_backend
    fi
fi

# ---- captioning, stages 3 and 4: exp/caption/<tag>/<decoder>/<kind>/seed<N> (etser.plan_caption) ----
# Planning checks every decoder config and model dir, the frames and the caption files before any job.
# Scoring: one job per 12 scorings, each in one process with one METEOR Java (~35 s to start).
caption_plan() {  # caption_plan train|score OUT
    ${python} -m etser.plan_caption "$1" --out "$2" --feats_dir "${caption_fdir}" --upstream "${caption_upstream}" \
        --decoders "${caption_decoders}" --kinds "${caption_kinds}" --seeds "${caption_seeds}" \
        --baselines "${caption_baselines}" --sets "${sets}" --data_dir data --exp_root exp --ngpu "${ngpu}" \
        --num_threads "${num_threads}" --overwrite "${overwrite}"
}
if [ "${caption}" = true ] && [ "${stage}" -le 4 ] && [ "${stop_stage}" -ge 3 ]; then
    caption_fdir=dump/$(${python} -m etser.upstream tag "${caption_upstream}" --conf_dir conf/upstream)
    mkdir -p exp/log
    if [ "${stage}" -le 3 ] && [ "${stop_stage}" -ge 3 ]; then
        caption_plan train exp/caption_train_jobs.txt
        n=$(wc -l < exp/caption_train_jobs.txt); cnj=$(( n < nj ? n : nj ))
        log "Stage 3: ${n} caption trainings (${caption_fdir}; kinds: ${caption_kinds}; decoders: ${caption_decoders}) in ${cnj} jobs, logs exp/log/caption_train.*.log"
        # shellcheck disable=SC2086
        ${job_cmd} --num_threads "${num_threads}" JOB=1:"${cnj}" "exp/log/caption_train.JOB.log" \
            ${python} -m etser.caption.train --job_list exp/caption_train_jobs.txt --job JOB --num_jobs "${cnj}"
    fi
    if [ "${stage}" -le 4 ] && [ "${stop_stage}" -ge 4 ]; then
        caption_plan score exp/caption_score_jobs.txt
        n=$(wc -l < exp/caption_score_jobs.txt); cnj=$(( (n + 11) / 12 )); cnj=$(( cnj < nj ? cnj : nj ))
        log "Stage 4: ${n} caption scorings in ${cnj} jobs, logs exp/log/caption_score.*.log"
        # shellcheck disable=SC2086
        ${job_cmd} --num_threads "${num_threads}" JOB=1:"${cnj}" "exp/log/caption_score.JOB.log" \
            ${python} -m etser.caption.score --job_list exp/caption_score_jobs.txt --job JOB --num_jobs "${cnj}"
    fi
fi

# ---- stage 5: results ----
# exp/RESULTS.md from every exp/*/*/*/seed*/decode_<set>/metrics.json (all upstreams and heads so far), on
# test when it is among --sets, else on the last of them.
if [ "${stage}" -le 5 ] && [ "${stop_stage}" -ge 5 ]; then
    results_set=test
    case " ${sets} " in *" test "*) ;; *) results_set=${sets##* } ;; esac
    log "Stage 5: exp/RESULTS.md from all scored experiments under exp/ (set ${results_set})"
    if [ "${classify}" = true ]; then
    ${python} -m etser.results --exp exp --out exp/RESULTS.md --set "${results_set}" \
        --results_conf "${results_conf}" --tasks_conf "${tasks_conf}"
    else rm -f exp/RESULTS.md; fi
    # the captioning table of every scored caption experiment so far, appended to RESULTS.md
    if [ "${caption}" = true ] || [ -d exp/caption ]; then
        ${python} -m etser.caption.table exp/caption --set "${results_set}" --out exp/RESULTS_caption.md
        cat exp/RESULTS_caption.md >> exp/RESULTS.md
    fi
fi

log "Successfully finished stages ${stage}-${stop_stage}"
exit 0
}
