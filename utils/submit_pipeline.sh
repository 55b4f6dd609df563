#!/usr/bin/env bash
# Submit the whole recipe, ./run.sh itself, as one Slurm batch job (run from the repo root or egs/emotiontalk/).
#
#   utils/submit_pipeline.sh [options] [-- run.sh options]
#   utils/submit_pipeline.sh --time 1-00:00:00 --num_threads 8 --mem 32G --gpu 1 -- --upstream hubert_base --ngpu 1
#
# The job runs ./run.sh in this directory with this environment (sbatch --export=ALL). Inside it, run.sh
# keeps its own --cmd_backend (default local: its jobs share this job's CPUs and GPUs; pass
# `-- --cmd_backend slurm` to let it submit array jobs of its own, where compute nodes may run sbatch).
# Returns once the job is queued, printing its id and log; --wait true waits and exits with the job's status.
# Options:
#   --num_threads T --mem M --gpu G --time T --partition P   resources of the job (sbatch flags via --slurm_conf)
#   --slurm_conf FILE the launcher config (default: conf/slurm.conf)
#   --config FILE     read these options from a file of name=value lines
#   --log FILE        the job's log; %j is the job id (default: exp/pipeline/run.%j.log)
#   --job_name NAME   (default: etser_run)
#   --wait true|false (default: false)
set -euo pipefail

num_threads=    # empty: the config's default
mem=
gpu=
time=
partition=
slurm_conf=conf/slurm.conf
log=exp/pipeline/run.%j.log
job_name=etser_run
wait=false
help_message=$(sed -n '2,/^set -e/{/^set -e/d;s/^# \{0,1\}//p}' "$0")

if [ ! -f ./run.sh ] || [ ! -f utils/slurm.py ]; then echo "${0##*/}: run me where run.sh is (repo root or egs/emotiontalk)" >&2; exit 1; fi
# shellcheck disable=SC1091
. utils/parse_options.sh

opts=(--config "${slurm_conf}")
[ -n "${num_threads}" ] && opts+=(--num_threads "${num_threads}")
[ -n "${gpu}" ] && opts+=(--gpu "${gpu}")
[ -n "${mem}" ] && opts+=(--mem "${mem}")
[ -n "${time}" ] && opts+=(--time "${time}")
[ -n "${partition}" ] && opts+=(--partition "${partition}")
# the sbatch command and resource flags that conf/slurm.conf gives (shell-quoted words)
flags=$(python3 utils/slurm.py flags "${opts[@]}") || exit 1
sbatch_cmd=()   # set by the eval: an array of the shell-quoted words
eval "sbatch_cmd=(${flags})"
command -v "${sbatch_cmd[0]}" >/dev/null 2>&1 \
    || { echo "${0##*/}: ${sbatch_cmd[0]} not found: no Slurm client here" >&2; exit 1; }

mkdir -p "$(dirname "${log}")"
run_cmd=$(printf '%q ' ./run.sh "$@")
submit=("${sbatch_cmd[@]}" --job-name="${job_name}" --chdir="$(pwd)" --output="${log}" --parsable)
${wait} && submit+=(--wait)
echo "${0##*/}: submitting: ${run_cmd}" >&2
set +e
job_id=$("${submit[@]}" <<EOF
#!/usr/bin/env bash
exec ${run_cmd}
EOF
)
rc=$?
set -e
job_id=${job_id%%;*}
shown_log=${log//%j/${job_id:-<id>}}
if ${wait}; then
    if [ "${rc}" -eq 0 ]; then
        echo "${0##*/}: job ${job_id} finished; log: ${shown_log}" >&2
    else
        echo "${0##*/}: job ${job_id:-(not submitted)} failed (sbatch exit ${rc}); log: ${shown_log}" >&2
        [ -f "${shown_log}" ] && tail -n 5 "${shown_log}" | sed 's/^/    /' >&2
    fi
    exit "${rc}"
fi
[ "${rc}" -eq 0 ] || { echo "${0##*/}: sbatch failed (exit ${rc})" >&2; exit "${rc}"; }
echo "${0##*/}: submitted job ${job_id}; follow it with: tail -f ${shown_log}   cancel with: scancel ${job_id}" >&2
echo "${job_id}"
