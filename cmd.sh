# Job launchers with the Kaldi interface:  ${cmd} JOB=1:N log/x.JOB.log prog ... JOB ...
# cmd_backend=local runs jobs on this machine (utils/run.py); slurm submits one sbatch array job
# (utils/slurm.py, options in conf/slurm.conf). Select with ./run.sh --cmd_backend slurm or the
# environment variable cmd_backend.
cmd_backend=${cmd_backend:-local}
case "${cmd_backend}" in
    local)
        train_cmd="utils/run.py"
        cuda_cmd="utils/run.py"
        ;;
    slurm)
        train_cmd="utils/slurm.py --config conf/slurm.conf"
        cuda_cmd="utils/slurm.py --config conf/slurm.conf --gpu 1"
        ;;
    *)
        echo "cmd.sh: unknown cmd_backend '${cmd_backend}' (local or slurm)" >&2
        return 1 2>/dev/null || exit 1
        ;;
esac
