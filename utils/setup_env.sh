#!/usr/bin/env bash
# Create (or update) the recipe's Python environment in <repo>/.venv from requirements.txt.
# Idempotent and quick when nothing changed: a stamp holds the hash of requirements.txt and the venv's
# Python version, so a changed requirements.txt, or a .venv of too old a Python, is rebuilt.
#
# Usage: utils/setup_env.sh [--python /path/to/python3.12] [--print-python]
# The interpreter (espnet 202611 needs Python >= 3.12, < 3.14): --python or $PYTHON if given, else the first
# that runs and is new enough of python3.12, python3.13, pyenv's installed 3.12.x / 3.13.x (a pyenv shim
# fails unless PYENV_VERSION selects a version that has it), python3.
# --print-python prints the interpreter it would use and exits (nothing is built).
set -euo pipefail
min_minor=12      # Python 3.12 ...
max_minor=13      # ... to 3.13 (espnet 202611: >= 3.12, < 3.14)
python=${PYTHON:-}
print_only=false
while [ $# -gt 0 ]; do
    case "$1" in
        --python) python=$2; shift 2 ;;
        --print-python) print_only=true; shift ;;
        *) echo "setup_env: unknown argument $1 (usage: $0 [--python PYTHON] [--print-python])" >&2; exit 1 ;;
    esac
done
root=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
venv=${root}/.venv
req=${root}/requirements.txt
stamp=${venv}/.requirements.sha256

# "3.12.1" if running "$1" works and prints its version, else nothing
py_version() {
    "$1" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null || true
}
# true if version $1 (X.Y.Z) is within the supported range
version_ok() {
    local major minor
    IFS=. read -r major minor _ <<< "$1"
    [ "${major:-0}" -eq 3 ] && [ "${minor:-0}" -ge "${min_minor}" ] && [ "${minor:-0}" -le "${max_minor}" ]
}
pyenv_candidates() {
    local pyenv v
    pyenv=$(command -v pyenv || true)
    [ -z "${pyenv}" ] && [ -x "${PYENV_ROOT:-${HOME:-/root}/.pyenv}/bin/pyenv" ] \
        && pyenv=${PYENV_ROOT:-${HOME:-/root}/.pyenv}/bin/pyenv
    [ -n "${pyenv}" ] || return 0
    # newest patch release of 3.12 first, then of 3.13
    for minor in $(seq "${min_minor}" "${max_minor}"); do
        v=$("${pyenv}" versions --bare 2>/dev/null | grep -E "^3\.${minor}\.[0-9]+$" | sort -t. -k3,3n | tail -n 1)
        [ -n "${v}" ] && echo "$("${pyenv}" prefix "${v}" 2>/dev/null)/bin/python"
    done
    return 0
}

need="Python 3.${min_minor} or 3.${max_minor} (espnet 202611 needs >= 3.12, < 3.14)"
if [ -n "${python}" ]; then
    got=$(py_version "${python}")
    if [ -z "${got}" ]; then
        echo "setup_env: ERROR: ${python} (from --python/PYTHON) does not run; this recipe needs ${need}" >&2; exit 1
    fi
    if ! version_ok "${got}"; then
        echo "setup_env: ERROR: ${python} is Python ${got}; this recipe needs ${need}: point --python or PYTHON at one" >&2
        exit 1
    fi
else
    tried=()
    for cand in python3.12 python3.13 $(pyenv_candidates) python3; do
        got=$(py_version "${cand}")
        tried+=("${cand}${got:+ (${got})}")
        if [ -n "${got}" ] && version_ok "${got}"; then python=${cand}; break; fi
    done
    if [ -z "${python}" ]; then
        echo "setup_env: ERROR: no ${need} found (tried: ${tried[*]}); install one (e.g. pyenv install 3.12) and" \
             "point at it with --python /path/to/python3.12 or PYTHON=/path/to/python3.12" >&2
        exit 1
    fi
fi
if [ "${print_only}" = true ]; then
    echo "${python} ${got}"
    exit 0
fi

# an existing .venv of another Python (e.g. a 3.11 one from before) is rebuilt
if [ -e "${venv}" ] || [ -L "${venv}" ]; then
    have=$(py_version "${venv}/bin/python")
    if [ -z "${have}" ] || ! version_ok "${have}"; then
        echo "$(date '+%F %T') setup_env: ${venv} has Python ${have:-that does not run}; rebuilding it with ${python} (${got})" >&2
        if [ -L "${venv}" ]; then rm -f "${venv}"; else rm -rf "${venv}"; fi
    fi
fi
want="$(sha256sum "${req}" | cut -d' ' -f1) python$(py_version "${venv}/bin/python")"
if [ -f "${stamp}" ] && [ "$(cat "${stamp}")" = "${want}" ]; then
    exit 0
fi
echo "$(date '+%F %T') setup_env: installing ${req} into ${venv} with ${python} (${got}) (first run: about 5 minutes, ~6 GB)" >&2
if [ ! -x "${venv}/bin/python" ]; then
    "${python}" -m venv "${venv}"
fi
"${venv}/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"${venv}/bin/python" -m pip install -q --disable-pip-version-check -r "${req}"
echo "$(sha256sum "${req}" | cut -d' ' -f1) python$(py_version "${venv}/bin/python")" > "${stamp}"
echo "$(date '+%F %T') setup_env: done ($("${venv}/bin/python" -m pip show espnet 2>/dev/null | grep '^Version' || echo 'espnet not installed'))" >&2
