"""The README's first command, as a user runs it from egs/emotiontalk/: the default recipe on the embedded
mini corpus learns (far above chance) and produces RESULTS.md and the confusion PNG."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EGS = ROOT / "egs" / "emotiontalk"


def test_default_recipe_learns_from_egs_dir(tmp_path, mini_release):
    # A working directory whose files are the links of egs/emotiontalk/ (link -> link -> repo file).
    w = tmp_path / "egs_copy"
    w.mkdir()
    for name in ("run.sh", "path.sh", "cmd.sh", "conf", "local", "utils"):
        assert (EGS / name).exists(), f"egs/emotiontalk/{name} is missing or a broken link"
        (w / name).symlink_to(EGS / name)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "cmd_backend")}
    # the speech upstream only: the text and visual baselines' configs come with stage 2's modalities
    r = subprocess.run(["./run.sh", "--db_root", str(mini_release), "--upstreams", "fbank_no_cmvn",
                        "--tasks", "speech_four speech_all",
                        "--seeds", "1", "--nj", "2"], cwd=w, env=env, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "Successfully finished stages 1-5" in r.stderr

    (tag_dir,) = (w / "exp").glob("fbank_no_cmvn_*")
    ua = {}
    for task in ("speech_four", "speech_all"):
        dec = tag_dir / "superb" / task / "seed1" / "decode_test"
        ua[task] = json.loads((dec / "metrics.json").read_text())["ua"]
        png = (dec / "confusion.png").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 1000
    # chance: 0.25 (four classes) and 0.143 (seven); measured 0.72 and 0.60 (README)
    assert ua["speech_four"] >= 0.55 and ua["speech_all"] >= 0.35, ua
    results = (w / "exp" / "RESULTS.md").read_text()
    assert "Speech(Four)" in results and "Speech(All)" in results and tag_dir.name in results


def test_caption_decoder_beats_both_baselines_on_the_mini_corpus(tmp_path, mini_release):
    """./run.sh --tasks caption with the committed configs: for every caption kind the from-scratch decoder
    scores above the most frequent caption and the nearest training utterance on BLEU-4 and ROUGE-L."""
    w = tmp_path / "work"
    w.mkdir()
    for name in ("run.sh", "path.sh", "cmd.sh", "conf", "local", "utils"):
        (w / name).symlink_to(EGS / name)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "cmd_backend")}
    r = subprocess.run(["./run.sh", "--db_root", str(mini_release), "--tasks", "caption", "--nj", "2"], cwd=w,
                       env=env, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-4000:]
    scores = {}
    for f in (w / "exp" / "caption").glob("*/*/*/**/decode_test/metrics.json"):
        m = json.loads(f.read_text())
        scores[m["kind"], m["decoder"]] = m["scores"]
    for kind in ("speaker", "style", "emotion", "overall"):
        ours = scores[kind, "transformer"]
        for base in ("baseline_frequent", "baseline_nearest"):
            for metric in ("bleu4", "rouge_l"):
                # measured (README): the closest is style ROUGE-L, 0.583 against the nearest utterance's 0.580
                assert ours[metric] > scores[kind, base][metric], (kind, base, metric, ours, scores[kind, base])
