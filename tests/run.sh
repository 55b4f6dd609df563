#!/usr/bin/env bash
# The test command: make the environment if needed, then run the suite. Extra args go to pytest.
set -euo pipefail
root=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
"${root}/utils/setup_env.sh"
cd "${root}"
# pytest.ini names tests/ as the default; `tests/run.sh tests/test_score.py -x` runs one file
exec "${root}/.venv/bin/python" -m pytest "$@"
