"""run.sh and utils/*.sh pass shellcheck with .shellcheckrc (every variable quoted, even one whose default has no
space: --expdir 'exp sp' must reach every command as one word). CI installs shellcheck (.ci/run); elsewhere
the test skips without it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_run_sh_and_utils_pass_shellcheck():
    exe = shutil.which("shellcheck")
    if exe is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("shellcheck not found, and CI must run this test (.ci/run installs it: apt-get install "
                        "shellcheck)")
        pytest.skip("shellcheck not found (apt-get install shellcheck)")
    scripts = ["run.sh", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "utils").glob("*.sh"))]
    r = subprocess.run([exe, "--format", "gcc", *scripts], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
