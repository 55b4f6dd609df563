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
    """./run.sh --tasks caption with the committed configs (one seed): the from-scratch decoder scores above the
    most frequent caption on every kind, and above the nearest training utterance on average over the kinds,
    on BLEU-4 and ROUGE-L, by margins far beyond what a seed or the machine's CPU kernels change."""
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
    kinds = ("speaker", "style", "emotion", "overall")
    # Measured (README, Captioning; seeds 1-3 on this corpus): a training's figures move with the seed (std up
    # to 0.049 BLEU-4 / 0.037 ROUGE-L for one kind) and with the CPU kernels (style seed 1 BLEU-4: 0.570
    # AVX-512, 0.550 ATEN_CPU_CAPABILITY=avx2, 0.514 with MKL and oneDNN also held to AVX2).  So no single
    # kind's margin over the nearest utterance is asserted (the smallest, emotion ROUGE-L, was +0.047), only
    # what is robust:
    for kind in kinds:
        for metric in ("bleu4", "rouge_l"):
            # every seed +0.087 or more (style ROUGE-L): > 2 x the largest std of a kind
            ours, base = scores[kind, "transformer"][metric], scores[kind, "baseline_frequent"][metric]
            assert ours > base, (kind, metric, ours, base)
    for metric, least in (("bleu4", 0.04), ("rouge_l", 0.03)):
        # mean over the kinds of (decoder - nearest): per seed 0.160 / 0.098 / 0.143 BLEU-4 (std 0.026) and
        # 0.117 / 0.064 / 0.103 ROUGE-L (std 0.022); each bound is below every seed's and >= 3 std below the mean
        margin = sum(scores[k, "transformer"][metric] - scores[k, "baseline_nearest"][metric] for k in kinds) / 4
        assert margin >= least, (metric, margin, {k: (scores[k, "transformer"][metric],
                                                      scores[k, "baseline_nearest"][metric]) for k in kinds})
    # style (speaking rate and loudness: the whole utterance) is where the decoder without encoder layers lost
    # to the nearest utterance (BLEU-4 +0.018 here, -0.009 on another machine); now +0.070 at worst over
    # seeds 1-3 and the three CPU-kernel settings above, against a bound of +0.03
    ours, base = scores["style", "transformer"]["bleu4"], scores["style", "baseline_nearest"]["bleu4"]
    assert ours >= base + 0.03, ("style", ours, base)
