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
    """./run.sh --tasks caption with the committed configs (one seed, egemaps_lld frames): the from-scratch decoder
    scores above the most frequent caption on every kind, above the nearest training utterance (by the same
    frames' statistics) on average over the kinds and on emotion, on BLEU-4 and ROUGE-L, by margins far beyond
    what a seed or the machine's CPU kernels change."""
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
    # Measured (README, Captioning; seeds 1-3 on this corpus, egemaps_lld frames, the mean of the last 10 of 25
    # epochs decoded): a training's figures move with the seed (std up to 0.023 BLEU-4 / 0.023 ROUGE-L for one
    # kind) and with the CPU kernels (about +-0.05 for one run of the best-epoch decoder, docs/captioning.md).  So
    # the margins asserted are those far beyond that:
    for kind in kinds:
        for metric in ("bleu4", "rouge_l"):
            # every seed +0.116 or more (ROUGE-L; BLEU-4 +0.177): > 5 x the largest std of a kind
            ours, base = scores[kind, "transformer"][metric], scores[kind, "baseline_frequent"][metric]
            assert ours > base, (kind, metric, ours, base)
    for metric, least in (("bleu4", 0.04), ("rouge_l", 0.02)):
        # mean over the kinds of (decoder - nearest): per seed 0.109 / 0.144 / 0.136 BLEU-4 (std 0.015) and
        # 0.085 / 0.111 / 0.107 ROUGE-L (std 0.011); each bound is below every seed's by >= 4 std
        margin = sum(scores[k, "transformer"][metric] - scores[k, "baseline_nearest"][metric] for k in kinds) / 4
        assert margin >= least, (metric, margin, {k: (scores[k, "transformer"][metric],
                                                      scores[k, "baseline_nearest"][metric]) for k in kinds})
    # emotion (the prosody of the whole utterance) is what eGeMAPS LLD frames fixed: on fbank_no_cmvn frames the
    # decoder gave 0.448 +- 0.029 BLEU-4 (best seed 0.487), below the nearest utterance by eGeMAPS LLD
    # statistics (0.523); now 0.660 / 0.698 / 0.644 (std 0.023), +0.121 or more over that nearest utterance
    ours, base = scores["emotion", "transformer"]["bleu4"], scores["emotion", "baseline_nearest"]["bleu4"]
    # (a corpus-specific bound: it holds on the --seed 1 corpus, worst seed 0.703, +0.182, but not on the --seed 2
    # one, where the worst seed gives 0.594 against the nearest utterance's 0.616)
    assert ours >= 0.55, ("emotion", ours)
    assert ours >= base + 0.04, ("emotion", ours, base)
