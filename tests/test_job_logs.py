"""Job logs (stderr to a file, as every launcher runs a job): no progress-bar fragments, and every warning
starts its own line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from etser.datadir import write_table

ROOT = Path(__file__).resolve().parents[1]


def test_stage2_job_log_has_whole_lines(tmp_path):
    data = tmp_path / "data" / "train"
    data.mkdir(parents=True)
    wav = {}
    rng = np.random.default_rng(0)
    for i, seconds in enumerate((1.2, 0.02, 0.9, 0.01)):  # two shorter than 0.05 s: zero-padded, with a warning
        p = tmp_path / f"u{i}.wav"
        sf.write(p, (0.1 * rng.standard_normal(int(seconds * 16000) + 1)).astype(np.float32), 16000)
        wav[f"S01-u{i}"] = str(p)
    write_table(data / "wav.scp", wav)
    log = tmp_path / "extract.1.log"
    with open(log, "wb") as f:
        r = subprocess.run([sys.executable, "-m", "etser.features.extract", "job", "--config",
                            str(ROOT / "conf/upstream/fbank_no_cmvn.yaml"), "--data", str(data),
                            "--dir", str(tmp_path / "dump"), "--nj", "1", "--job", "1"],
                           stdout=f, stderr=f, cwd=ROOT, timeout=300)
    text = log.read_text(encoding="utf-8")
    assert r.returncode == 0, text
    assert "\r" not in text and "%|" not in text  # no bar: its updates would run into the lines below
    warnings = [line for line in text.splitlines() if "zero-padded" in line]
    assert len(warnings) == 2 and all(line.startswith("warning: ") for line in warnings), text
    assert any(line.startswith("extract ") and "utts/s" in line for line in text.splitlines())  # the summary
