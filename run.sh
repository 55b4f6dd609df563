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
# Speech: openSMILE's eGeMAPSv02 functionals (docs/upstreams.md; on the mini corpus above fbank_no_cmvn, S3PRL
# fbank without per-utterance CMVN).
upstreams="egemaps text_baseline visual_baseline"
upstream=           # alias of --upstreams for a single one
nj=4                # parallel jobs (feature extraction; at most this many training/scoring jobs)
ngpu=0              # GPUs per extraction/training job (0: CPU)
num_threads=1       # CPU threads per job
backend=ours        # ours: etser.train/etser.learn.score; espnet: etser.espnet_backend
heads=              # conf/train/<head>.yaml (conf/espnet/<head>.yaml for --backend espnet), several allowed;
                    # empty: the backend's own default (superb; feats for espnet)
tasks=              # empty: each upstream's modality's default list in the tasks conf
tasks_conf=conf/tasks.yaml
results_conf=conf/results.yaml
seeds="1 2 3"
# the training protocol, conf/protocol/<name>.yaml: corrected (ours) or official (the official code's choices,
# its bugs included); it sets --heads --seeds --search_* unless given (README: which to use)
protocol=corrected
# MERBench's search for the rows with tune lists (head paper, every fusion algorithm): N random draws (one
# stage-3 job line each), the best on val, then K runs of it (seeds 1..K, in place of --seeds); 0: no search.
# Defaults: the protocol's (corrected: 0 draws, 6 runs, seed 0).
search_trials=0
search_runs=6
search_seed=0
fusion_trials=      # former names, aliases of --search_trials / --search_seed (the search covers heads and fusion)
fusion_search_seed=
compare_exp=        # stage 5: an exp dir of the other protocol's runs: RESULTS.md adds "What each fix is worth"
# multimodal fusion (stages 3-5): algorithms of conf/fusion over one stream per modality (NAME=UPSTREAM)
fusion="attention"  # empty: no fusion; all ten: "attention tfn lmf misa mmim mult mfn graph_mfn mfm mctn"
fusion_streams="speech=egemaps text=text_baseline visual=visual_baseline"
fusion_tasks=       # empty: the 'fusion' list of the tasks conf (multi_four multi_all sentiment)
fusion_allow_missing=false  # true: an utterance without features in a stream is a missing modality
cmd_backend=${cmd_backend:-local}   # local | slurm (cmd.sh)
dumpdir=dump        # stage-2 features: <dumpdir>/<upstream tag>/<set>/
expdir=exp          # trainings, scores, RESULTS.md
tag=                # a named experiment: everything of stages 3-5 goes to <expdir>/<tag>/
# launcher options per stage (utils/run.py / utils/slurm.py: --mem 8G --time 4:00:00 --partition P --gpu G),
# e.g. extract_opts="--mem 16G --time 2:00:00 --partition gpu"; docs/slurm.md
extract_opts=
train_opts=
score_opts=
max_jobs_run=       # at most this many jobs of an array at once (Slurm --array=1-N%K); empty: the launcher's
overwrite=false     # true: redo stages whose outputs exist
on_change=redo      # an output whose inputs changed: redo it (redo) or stop naming what changed (refuse)
python=python3
# captioning (stages 3-5; docs/captioning.md): runs when --tasks is empty (the default) or names "caption"
caption_decoders="transformer"   # conf/caption/<name>.yaml: transformer gpt2 qwen2 bart
caption_kinds="speaker style emotion overall"
# the captioners' frames: openSMILE's eGeMAPS LLDs (pitch, jitter, shimmer, loudness, spectral slope per 10 ms:
# what speaker, style and emotion captions describe; README, Captioning); a speech upstream that dumps frames
caption_upstream=egemaps_lld
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
  --heads "A B"                conf/train/A.yaml ... or conf/espnet/A.yaml (default: superb; feats for --backend espnet)
  --tasks "T ..."              tasks of every upstream (default: each upstream's modality's list in --tasks_conf)
  --tasks_conf FILE            tasks YAML (default: ${tasks_conf})
  --results_conf FILE          RESULTS.md tables YAML (default: ${results_conf})
  --seeds "1 2 3"              training seeds (default: the protocol's; corrected: ${seeds})
  --protocol NAME              conf/protocol/NAME.yaml: corrected (ours) or official (the official code's
                               choices and bugs); sets every training choice of stages 3-5 and the defaults of
                               --heads --seeds --search_* (default: ${protocol})
  --search_trials N            random search of the rows with tune lists (head paper, fusion): N draws, the best
                               on val, then --search_runs runs of it (default: the protocol's; corrected: none)
  --search_runs K              runs (seeds 1..K) of each chosen draw (default: the protocol's; corrected: 6)
  --search_seed S              seed of the draws (default: the protocol's; corrected: 0)
  --fusion_trials N / --fusion_search_seed S   aliases of --search_trials / --search_seed
  --compare_exp DIR            stage 5: the other protocol's exp dir (e.g. exp/official): RESULTS.md compares
                               every model trained under both (local/compare_protocols.sh) (default: none)
  --fusion "A B"               fusion algorithms, conf/fusion/A.yaml ... (default: ${fusion}; empty: none)
  --fusion_streams "N=UP ..."  one upstream per modality (default: ${fusion_streams})
  --fusion_tasks "T ..."       fusion tasks (default: the 'fusion' list of --tasks_conf)
  --fusion_allow_missing B     utterances missing in a stream are missing modalities (default: ${fusion_allow_missing})
  --nj N                       parallel jobs of stages 2-4 (default: ${nj})
  --ngpu N                     GPUs per job, 0: CPU (default: ${ngpu})
  --num_threads N              CPU threads per job (default: ${num_threads})
  --cmd_backend local|slurm    job launcher (default: ${cmd_backend})
  --dumpdir DIR                stage-2 features (default: ${dumpdir})
  --expdir DIR                 trainings, scores and RESULTS.md (default: ${expdir})
  --tag NAME                   a named experiment: stages 3-5 write to EXPDIR/NAME/ (default: none)
  --extract_opts / --train_opts / --score_opts "OPTS"
                               launcher options of stage 2 / 3 / 4, e.g. "--mem 16G --time 2:00:00 --partition gpu
                               --gpu 1" (default: none; see docs/slurm.md)
  --max_jobs_run K             at most K jobs of a stage at once (Slurm's --array %K) (default: the launcher's)
  --overwrite true|false       redo stages whose outputs exist (default: ${overwrite})
  --on_change redo|refuse      features, trainings, scores whose inputs changed: redo them or stop saying what
                               changed (default: ${on_change}); unchanged ones are always reused
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
# the aliases count as given: the protocol does not override them
if [ -n "${fusion_trials}" ]; then search_trials=${fusion_trials}; po_given+="search_trials "; fi
if [ -n "${fusion_search_seed}" ]; then search_seed=${fusion_search_seed}; po_given+="search_seed "; fi
if [ -z "${upstreams// /}" ]; then log "ERROR: --upstreams is empty"; exit 1; fi
case "${backend}" in ours|espnet) ;; *) log "ERROR: --backend ${backend}: ours or espnet"; exit 1 ;; esac
# every option is checked before anything is deleted (--overwrite true) or launched
bad_options=
for opt in nj num_threads search_runs; do
    [[ "${!opt}" =~ ^[1-9][0-9]*$ ]] || bad_options+=" --${opt} ${!opt} (a positive integer);"
done
[[ "${ngpu}" =~ ^[0-9]+$ ]] || bad_options+=" --ngpu ${ngpu} (0 or a positive integer);"
[[ "${search_trials}" =~ ^[0-9]+$ ]] || bad_options+=" --search_trials ${search_trials} (0 or a positive integer);"
[[ "${search_seed}" =~ ^[0-9]+$ ]] || bad_options+=" --search_seed ${search_seed} (0 or a positive integer);"
[ -z "${max_jobs_run}" ] || [[ "${max_jobs_run}" =~ ^[1-9][0-9]*$ ]] \
    || bad_options+=" --max_jobs_run ${max_jobs_run} (a positive integer);"
case "${on_change}" in redo|refuse) ;; *) bad_options+=" --on_change ${on_change} (redo or refuse);" ;; esac
case "${tag}" in */*|.|..) bad_options+=" --tag ${tag} (a name, not a path);" ;; esac
case "${protocol}" in ""|*/*|.|..) bad_options+=" --protocol ${protocol} (a name of conf/protocol);" ;; esac
if [ -n "${bad_options}" ]; then
    log "ERROR: bad option value(s):${bad_options%;}"; exit 1
fi
if [ -n "${tag}" ]; then expdir=${expdir}/${tag}; fi
# captioning: on by default and with --tasks "... caption"; "caption" is not a classifier task
caption=false; classify=true; caption_asked=false
case " ${tasks} " in *" caption "*) caption=true; caption_asked=true; tasks=$(echo " ${tasks} " | sed 's/ caption / /g; s/^ *//; s/ *$//')
    if [ -z "${tasks}" ]; then classify=false; fi ;; esac
if [ -z "${tasks// /}" ] && [ "${classify}" = true ]; then caption=true; fi
if [ -z "${caption_decoders// /}" ] || [ -z "${caption_kinds// /}" ]; then caption=false; fi

# A fresh clone has no Python environment: make <repo>/.venv first (a no-op once it matches
# requirements.txt). ETSER_PYTHON_ENV=system uses the python3 on PATH instead (e.g. a conda env).
if [ "${ETSER_PYTHON_ENV:-venv}" = venv ]; then
    utils/setup_env.sh
fi
# shellcheck disable=SC1091
. ./path.sh
# shellcheck disable=SC1091
. ./cmd.sh
# the protocol's run options (--heads --seeds --search_*) that the command line did not give
protocol_conf=conf/protocol/${protocol}.yaml
protocol_name=; protocol_version=   # set by the protocol's assignments below
protocol_values=$(${python} -m etser.launch.plan protocol --protocol "${protocol_conf}" --given "${po_given}") || exit 1
eval "${protocol_values}"
log "Protocol ${protocol_name} (${protocol_conf}, version ${protocol_version})"
if [ -z "${heads// /}" ]; then heads=$(${python} -m etser.launch.plan default_heads --backend "${backend}"); fi
# Every option of every stage, checked once, now (etser.launch.plan check): unknown or repeated names, training
# configs with unknown keys, upstream configs that do not load, fusion algorithms, streams and tasks, caption
# decoders and kinds, output dirs that overlap. The options of a family that is off are not checked.
check_fusion=; check_decoders=
if [ "${classify}" = true ]; then check_fusion=${fusion}; fi
if [ "${caption}" = true ]; then check_decoders=${caption_decoders}; fi
${python} -m etser.launch.plan check --upstreams "${upstreams}" --heads "${heads}" --tasks "${tasks}" \
    --seeds "${seeds}" --backend "${backend}" --tasks_conf "${tasks_conf}" \
    --fusion "${check_fusion}" --fusion_streams "${fusion_streams}" --fusion_tasks "${fusion_tasks}" \
    --caption_decoders "${check_decoders}" --caption_kinds "${caption_kinds}" --caption_upstream "${caption_upstream}" \
    --dir data data --dir dumpdir "${dumpdir}" --dir expdir "${expdir}" --protocol "${protocol_conf}" || exit 1
if [ -n "${max_jobs_run}" ]; then
    extract_opts="--max_jobs_run ${max_jobs_run} ${extract_opts}"
    train_opts="--max_jobs_run ${max_jobs_run} ${train_opts}"
    score_opts="--max_jobs_run ${max_jobs_run} ${score_opts}"
fi

# ---- one run.sh at a time per working directory: two would interleave writes to data/ dump/ exp/ ----
# The lock is held until this script and every job it started have exited (they inherit fd 9).
mkdir -p "${expdir}"
run_lock=${expdir}/.run.lock
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

# ---- what this release supports (stage 1's record, data/release.json): the default run keeps the families it
# has inputs and labels for and says which it skips; an option asking for something it lacks stops here ----
if [ "${stage}" -le 4 ] && [ "${stop_stage}" -ge 2 ]; then
    fit_caption=${caption}; if [ "${classify}" = false ]; then fit_fusion=; else fit_fusion=${fusion}; fi
    fitted=$(${python} -m etser.launch.plan fit --data_dir data --upstreams "${upstreams}" --tasks "${tasks}" \
        --fusion "${fit_fusion}" --fusion_streams "${fusion_streams}" --fusion_tasks "${fusion_tasks}" \
        --caption "${fit_caption}" --caption_kinds "${caption_kinds}" --caption_upstream "${caption_upstream}" \
        --caption_asked "${caption_asked}" --given "${po_given}" --tasks_conf "${tasks_conf}" \
        --extract "$([ "${stage}" -le 2 ] && echo true || echo false)" \
        --train "$([ "${stop_stage}" -ge 3 ] && echo true || echo false)") || exit 1
    # shell assignments of upstreams, fusion, fusion_streams, caption, caption_kinds, each value shell-quoted
    eval "${fitted}"
    if [ "${classify}" = false ]; then fusion=; fi
    if [ "${classify}" = true ] && [ -z "${upstreams// /}" ]; then
        log "ERROR: no upstream of --upstreams fits this release (see the lines above)"; exit 1
    fi
fi
stage2_upstreams=
if [ "${classify}" = true ]; then stage2_upstreams=${upstreams}; fi
if [ "${caption}" = true ]; then
    case " ${stage2_upstreams} " in *" ${caption_upstream} "*) ;; *) stage2_upstreams="${stage2_upstreams} ${caption_upstream}" ;; esac
fi

# ---- stage 2: upstream features -> dump/<tag>/<set>, for every upstream ----
# <tag> = <upstream>_<hash of the config>: a changed config never reuses old features. Jobs that finished
# are skipped on a rerun and unfinished ones redone; pooled_mean.scp appears only when the set is complete.
if [ "${stage}" -le 2 ] && [ "${stop_stage}" -ge 2 ]; then
  for upstream in ${stage2_upstreams}; do
    upstream_conf=conf/upstream/${upstream}.yaml
    # --check_ckpt: a missing checkpoint stops here with what to download, not in each of the nj jobs
    utag=$(${python} -m etser.features.upstream tag "${upstream}" --conf_dir conf/upstream --check_ckpt)
    if [ "${ngpu}" -gt 0 ]; then extract_cmd=${cuda_cmd}; else extract_cmd=${train_cmd}; fi
    for x in ${sets}; do
        dir=${dumpdir}/${utag}/${x}
        if [ -f "${dir}/pooled_mean.scp" ] && [ "${overwrite}" != true ]; then
            # complete: reused only if made from exactly what data/ holds now (ids, paths, files, config);
            # otherwise the jobs whose inputs changed are redone (their markers say which), or --on_change refuse
            rc=0
            ${python} -m etser.features.extract status --config "${upstream_conf}" --data "data/${x}" --dir "${dir}" \
                --on_change "${on_change}" || rc=$?
            if [ "${rc}" -eq 0 ]; then
                log "Stage 2: ${dir} is complete and up to date, skipped (--overwrite true redoes it)"
                continue
            elif [ "${rc}" -ne 1 ]; then
                exit 1
            fi
        fi
        if [ "${overwrite}" = true ]; then rm -rf "${dir}"; fi
        log "Stage 2: ${upstream} features of data/${x} -> ${dir} (${nj} jobs, logs in ${dir}/log)"
        mkdir -p "${dir}/log"
        # shellcheck disable=SC2086,SC2248  # launcher options and ${python} split into words on purpose
        ${extract_cmd} --num_threads "${num_threads}" ${extract_opts} JOB=1:"${nj}" "${dir}/log/extract.JOB.log" \
            ${python} -m etser.features.extract job --config "${upstream_conf}" --data "data/${x}" --dir "${dir}" \
                --nj "${nj}" --job JOB --ngpu "${ngpu}" --num_threads "${num_threads}"
        ${python} -m etser.features.extract merge --config "${upstream_conf}" --name "${upstream}" \
            --data "data/${x}" --dir "${dir}" --nj "${nj}"
    done
  done
fi

# dump/<tag> of every upstream (stages 3 and 4)
feats_dirs() {
    local up utag out=""
    for up in ${upstreams}; do
        utag=$(${python} -m etser.features.upstream tag "${up}" --conf_dir conf/upstream) || return 1
        out="${out} ${dumpdir}/${utag}"
    done
    echo "${out# }"
}
# The job files of stages 3 and 4, all written by one planner (etser.launch.plan), each line holding every
# option of its run. A stage plans all its job files before launching the first job: every line's options
# and inputs are checked before any training or scoring starts.
plan() {  # plan train|score|fusion_train|fusion_score|caption_train|caption_score OUT [OPTIONS]
    local cmd=$1 out=$2
    shift 2
    ${python} -m etser.launch.plan "${cmd}" --out "${out}" --seeds "${seeds}" --sets "${sets}" --data_dir data \
        --exp_root "${expdir}" --ngpu "${ngpu}" --num_threads "${num_threads}" --overwrite "${overwrite}" \
        --on_change "${on_change}" "$@"
}
search_opts=(--search_trials "${search_trials}" --search_runs "${search_runs}" --search_seed "${search_seed}")
plan_classifiers() {  # plan_classifiers train|score OUT [OPTIONS]: upstream x head x task x seed
    local fdirs
    fdirs=$(feats_dirs) || return 1
    plan "$1" "$2" --feats_dirs "${fdirs}" --heads "${heads}" --tasks "${tasks}" --backend "${backend}" \
        --tasks_conf "${tasks_conf}" --protocol "${protocol_conf}" "${search_opts[@]}" "${@:3}"
}
plan_fusion() {  # plan_fusion fusion_train|fusion_score OUT [OPTIONS]: algorithm x task x seed
    plan "$1" "$2" --fusion_streams "${fusion_streams}" --algos "${fusion}" --tasks "${fusion_tasks}" \
        --tasks_conf "${tasks_conf}" --allow_missing "${fusion_allow_missing}" "${search_opts[@]}" \
        --dump_root "${dumpdir}" --protocol "${protocol_conf}" "${@:3}"
}
plan_caption() {  # plan_caption caption_train|caption_score OUT [OPTIONS]: kind x decoder x seed (+ baselines)
    local seeds=${caption_seeds} utag   # captioning's own seeds, seen by plan()
    utag=$(${python} -m etser.features.upstream tag "${caption_upstream}" --conf_dir conf/upstream) || return 1
    plan "$1" "$2" --feats_dir "${dumpdir}/${utag}" \
        --upstream "${caption_upstream}" --decoders "${caption_decoders}" --kinds "${caption_kinds}" \
        --baselines "${caption_baselines}" --tasks_conf "${tasks_conf}" "${@:3}"
}
if [ "${ngpu}" -gt 0 ]; then job_cmd=${cuda_cmd}; else job_cmd=${train_cmd}; fi
# Launch a planned job file ${expdir}/NAME_jobs.txt: the runs_per_job of its header gives the job count (at
# most --nj); every job runs its lines through the one runner (etser.launch.run), in one process.
launch() {  # launch STAGE NAME "LAUNCHER OPTS"; logs ${expdir}/log/NAME.JOB.log
    local stage=$1 name=$2 opts=$3 job_file=${expdir}/$2_jobs.txt runs njobs
    if [ ! -f "${job_file}" ]; then return 0; fi   # that family does not run
    read -r runs njobs < <(${python} -m etser.launch.run --job_list "${job_file}" --count --max_jobs "${nj}")
    if [ -z "${njobs}" ]; then log "Stage ${stage}: cannot read ${job_file}"; return 1; fi
    if [ "${runs}" -eq 0 ]; then log "Stage ${stage}: ${job_file} is empty: nothing to run"; return 0; fi
    log "Stage ${stage}: ${runs} runs of ${job_file} in ${njobs} jobs, logs ${expdir}/log/${name}.*.log"
    # shellcheck disable=SC2086,SC2248  # launcher options and ${python} split into words on purpose
    ${job_cmd} --num_threads "${num_threads}" ${opts} JOB=1:"${njobs}" "${expdir}/log/${name}.JOB.log" \
        ${python} -m etser.launch.run --job_list "${job_file}" --job JOB --num_jobs "${njobs}"
}

# ---- stage 3: training ----
# Classifiers: exp/<tag>/<head>/<task>/seed<N>/ per upstream x head x task x seed (--backend espnet:
# exp/<tag>/espnet_<head>/...); fusion: exp/fusion_<tags>/<algo>/<task>/seed<N>/; captioning:
# exp/caption/<tag>/<decoder>/<kind>/seed<N>/. Finished trainings are skipped, killed ones resume from
# their last epoch checkpoint; --overwrite true retrains.
if [ "${stage}" -le 3 ] && [ "${stop_stage}" -ge 3 ]; then
    if [ "${classify}" = true ]; then
        for up in ${upstreams}; do
            utag=$(${python} -m etser.features.upstream tag "${up}" --conf_dir conf/upstream)
            for x in train val; do
                if [ ! -f "${dumpdir}/${utag}/${x}/pooled_mean.scp" ]; then
                    log "Stage 3: ${dumpdir}/${utag}/${x} has no features: run stage 2 for --upstream ${up} first"; exit 1
                fi
            done
        done
    fi
    mkdir -p "${expdir}/log"
    rm -f "${expdir}"/{,fusion_,caption_}train_jobs.txt "${expdir}"/{,fusion_}search_train_jobs.txt
    if [ "${classify}" = true ]; then plan_classifiers train "${expdir}/train_jobs.txt"; fi
    if [ "${classify}" = true ] && [ -n "${fusion// /}" ]; then plan_fusion fusion_train "${expdir}/fusion_train_jobs.txt"; fi
    if [ "${caption}" = true ]; then plan_caption caption_train "${expdir}/caption_train_jobs.txt"; fi
    for name in train fusion_train caption_train; do launch 3 "${name}" "${train_opts}"; done
    # the random search's second phase: with every draw done, the best on val of each searched row, K runs of it
    if [ "${search_trials}" -gt 0 ]; then
        if [ "${classify}" = true ]; then
            plan_classifiers train "${expdir}/search_train_jobs.txt" --search_phase runs
            if [ -n "${fusion// /}" ]; then
                plan_fusion fusion_train "${expdir}/fusion_search_train_jobs.txt" --search_phase runs
            fi
        fi
        for name in search_train fusion_search_train; do launch 3 "${name}" "${train_opts}"; done
    fi
fi

# ---- stage 4: scoring ----
# The best checkpoint of every training on every set but train -> <exp dir>/decode_<set>/; fusion also on
# every subset of the modalities present (decode_<set>/missing.json); captioning also its two baselines.
if [ "${stage}" -le 4 ] && [ "${stop_stage}" -ge 4 ]; then
    mkdir -p "${expdir}/log"
    rm -f "${expdir}"/{,fusion_,caption_}score_jobs.txt
    if [ "${classify}" = true ]; then plan_classifiers score "${expdir}/score_jobs.txt" --check_trained true; fi
    if [ "${classify}" = true ] && [ -n "${fusion// /}" ]; then
        plan_fusion fusion_score "${expdir}/fusion_score_jobs.txt" --check_trained true
    fi
    if [ "${caption}" = true ]; then plan_caption caption_score "${expdir}/caption_score_jobs.txt" --check_trained true; fi
    for name in score fusion_score caption_score; do launch 4 "${name}" "${score_opts}"; done
fi

# ---- stage 5: results ----
# exp/RESULTS.md from every exp/*/*/*/seed*/decode_<set>/metrics.json (all upstreams and heads so far), on
# test when it is among --sets, else on the last of them.
if [ "${stage}" -le 5 ] && [ "${stop_stage}" -ge 5 ]; then
    results_set="test"
    case " ${sets} " in *" test "*) ;; *) results_set=${sets##* } ;; esac
    log "Stage 5: ${expdir}/RESULTS.md from all scored experiments under ${expdir}/ (set ${results_set})"
    if [ "${classify}" = true ]; then
    ${python} -m etser.report.results --exp "${expdir}" --out "${expdir}/RESULTS.md" --set "${results_set}" \
        --results_conf "${results_conf}" --tasks_conf "${tasks_conf}" ${compare_exp:+--compare_exp "${compare_exp}"}
    else rm -f "${expdir}/RESULTS.md"; fi
    # the captioning table of every scored caption experiment so far, appended to RESULTS.md
    if [ "${caption}" = true ] || [ -d "${expdir}/caption" ]; then
        ${python} -m etser.report.caption_table "${expdir}/caption" --set "${results_set}" --out "${expdir}/RESULTS_caption.md"
        cat "${expdir}/RESULTS_caption.md" >> "${expdir}/RESULTS.md"
    fi
fi

log "Successfully finished stages ${stage}-${stop_stage}"
exit 0
}
