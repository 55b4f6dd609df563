#!/usr/bin/env bash
# Create (or update) the recipe's Python environment in <repo>/.venv from requirements.txt.
# Idempotent and quick when nothing changed: a stamp holds the hash of requirements.txt.
# Usage: utils/setup_env.sh [--python python3]
set -euo pipefail
python=${PYTHON:-python3}
[ "${1:-}" = "--python" ] && python=$2
root=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
venv=${root}/.venv
req=${root}/requirements.txt
stamp=${venv}/.requirements.sha256
want=$(sha256sum "${req}" | cut -d' ' -f1)
if [ -f "${stamp}" ] && [ "$(cat "${stamp}")" = "${want}" ]; then
    exit 0
fi
echo "$(date '+%F %T') setup_env: installing ${req} into ${venv} (first run: a few minutes, ~5 GB)" >&2
if [ ! -x "${venv}/bin/python" ]; then
    "${python}" -m venv "${venv}"
fi
# pip < 26 keeps the optional ESPnet extra installable (see requirements-espnet.txt).
"${venv}/bin/python" -m pip install -q --disable-pip-version-check "pip<26"
"${venv}/bin/python" -m pip install -q --disable-pip-version-check -r "${req}"
echo "${want}" > "${stamp}"
echo "$(date '+%F %T') setup_env: done" >&2
