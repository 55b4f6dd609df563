# Job launchers with the Kaldi interface:   ${train_cmd} JOB=1:N log/x.JOB.log prog ... JOB ...
# cmd_backend (./run.sh --cmd_backend slurm, or the environment variable) picks the backend:
#   local  utils/run.py: the jobs run on this machine, at most one per CPU at once
#   slurm  utils/slurm.py: one sbatch array job per call, waited for; sbatch flags for --num_threads,
#          --mem, --gpu, --time, --partition come from conf/slurm.conf (docs/slurm.md)
# train_cmd runs CPU jobs; cuda_cmd asks for ${ngpu} GPUs per job (./run.sh --ngpu N; 1 when unset).
# Both launchers accept the same options, so a stage writes e.g. ${cuda_cmd} --num_threads 2 ... once.
cmd_backend=${cmd_backend:-local}
case "${cmd_backend}" in
    local)
        export train_cmd="utils/run.py"
        export cuda_cmd="utils/run.py --gpu ${ngpu:-1}"
        ;;
    slurm)
        export train_cmd="utils/slurm.py --config conf/slurm.conf"
        export cuda_cmd="utils/slurm.py --config conf/slurm.conf --gpu ${ngpu:-1}"
        ;;
    *)
        echo "cmd.sh: unknown cmd_backend '${cmd_backend}' (local or slurm)" >&2
        return 1 2>/dev/null || exit 1
        ;;
esac
