# Sourced by run.sh and the stage scripts: finds the repo, its Python environment and tools.
# ETSER_ROOT is the repo checkout (this file's real location, also when reached through egs/emotiontalk/).
ETSER_ROOT=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
export ETSER_ROOT
# Use the repo's .venv (made by utils/setup_env.sh) unless the user brings an environment of their own
# (ETSER_PYTHON_ENV=system: whatever python3 is on PATH, e.g. an activated conda env on a cluster).
if [ "${ETSER_PYTHON_ENV:-venv}" = venv ] && [ -f "${ETSER_ROOT}/.venv/bin/activate" ]; then
    # shellcheck disable=SC1091
    . "${ETSER_ROOT}/.venv/bin/activate"
fi
# local/ holds the corpus-specific Python package `emotiontalk` (release parsing, mini corpus, labels)
export PYTHONPATH="${ETSER_ROOT}:${ETSER_ROOT}/local${PYTHONPATH:+:${PYTHONPATH}}"
export PATH="${ETSER_ROOT}/utils:${PATH}"
export LC_ALL=C
export PYTHONIOENCODING=utf-8
# One BLAS/OpenMP thread per process unless asked: jobs run in parallel and oversubscription is slow.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
# No model hub is reachable from most clusters' compute nodes (nor from CI): fail fast, never retry.
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
export TRANSFORMERS_OFFLINE=${TRANSFORMERS_OFFLINE:-1}
