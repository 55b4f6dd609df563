"""Stage 5: RESULTS.md tables from metrics.json, and the paired bootstrap test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from etser.learn import score
from etser.report import results
from etser.tasks import get_task


def _fake_run(exp: Path, tag: str, head: str, task: str, seed: int, refs: list[int], preds: list[int],
              set_name: str = "test", modality: str | None = None) -> dict:
    """An exp dir as stages 3-4 leave it: decode_<set>/metrics.json + predictions.txt, config.yaml env."""
    classes = list(get_task(task).classes)
    d = exp / tag / head / task / f"seed{seed}"
    (d / f"decode_{set_name}").mkdir(parents=True)
    probs = np.full((len(preds), len(classes)), 0.1 / max(1, len(classes) - 1))
    probs[np.arange(len(preds)), preds] = 0.9
    utts = [f"S01-u{i:04d}" for i in range(len(refs))]
    score.write_predictions(d / f"decode_{set_name}" / "predictions.txt", utts, [classes[r] for r in refs],
                            probs, classes)
    m = score.compute_metrics(refs, preds, len(classes))
    m.update(task=task, head=head, seed=seed, tag=tag, upstream=tag.rsplit("_", 1)[0], set=set_name, classes=classes)
    if modality is not None:   # absent: written before modalities (read as speech)
        m["modality"] = modality
    (d / f"decode_{set_name}" / "metrics.json").write_text(json.dumps(m))
    (d / "config.yaml").write_text("env: {torch: 9.9.9, python: 3.11.7, device: 'cpu: test', num_threads: 1}\n")
    (d / "feats_meta.json").write_text(json.dumps({"versions": {"torch": "9.9.9", "espnet-s3prl": "1.2.3"},
                                                   "devices": ["cpu"]}))
    return m


def _noisy(refs, accuracy, rng, c):
    refs = np.asarray(refs)
    wrong = (refs + rng.integers(1, c, len(refs))) % c
    return np.where(rng.random(len(refs)) < accuracy, refs, wrong).tolist()


def test_results_md_tables_mean_std_and_definitions(tmp_path):
    rng = np.random.default_rng(0)
    ua = {}
    for head, acc in (("superb", 0.9), ("paper", 0.5)):
        for task in ("speech_four", "multi_four", "speech_all", "multi_all"):
            c = len(get_task(task).classes)
            refs = (np.arange(84) % c).tolist()
            for seed in (1, 2, 3):
                ua[(head, task, seed)] = _fake_run(tmp_path, "fbank_no_cmvn_1234abcd", head, task, seed, refs,
                                                   _noisy(refs, acc, rng, c))["ua"]
    text = results.write_results(tmp_path, tmp_path / "RESULTS.md", num_samples=500)
    assert (tmp_path / "RESULTS.md").read_text() == text
    for name in ("## UA", "## WA", "## macro-F1", "## weighted-F1", "## Significance", "## Environment"):
        assert name in text
    ua_table = text.split("## UA", 1)[1].split("## WA", 1)[0]
    assert "| Upstream (tag) | Head | Speech(Four) | Multi(Four) | Speech(All) | Multi(All) | Mean |" in ua_table
    row = next(line for line in ua_table.splitlines() if "| superb |" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    v = 100 * np.array([ua[("superb", "speech_four", s)] for s in (1, 2, 3)])
    assert cells[2] == f"{v.mean():.2f} ± {v.std(ddof=1):.2f}"
    col_means = [np.mean([ua[("superb", t, s)] for s in (1, 2, 3)]) for t in
                 ("speech_four", "multi_four", "speech_all", "multi_all")]
    assert cells[-1] == f"{100 * np.mean(col_means):.2f}"
    assert results.DEFINITIONS["ua"] in ua_table
    assert "torch 9.9.9, S3PRL 1.2.3" in text and "cpu: test" in text
    sig = text.split("## Significance", 1)[1]
    assert "**Speech, Speech(Four)**: A = superb" in sig and "| UA |" in sig


def test_missing_seed_is_marked_and_no_mean_without_all_columns(tmp_path):
    refs = [0, 1, 2, 3] * 5
    _fake_run(tmp_path, "x_00000000", "superb", "speech_four", 1, refs, refs)
    _fake_run(tmp_path, "x_00000000", "superb", "speech_four", 2, refs, refs)
    _fake_run(tmp_path, "x_00000000", "paper", "speech_four", 1, refs, [0] * 20)
    text = results.write_results(tmp_path, tmp_path / "R.md", num_samples=200)
    ua_table = text.split("## UA", 1)[1].split("## WA", 1)[0]
    header = next(line for line in ua_table.splitlines() if line.startswith("| Upstream"))
    assert "Mean" not in header
    assert "| 25.00 (n=1) |" in ua_table and "| 100.00 ± 0.00 |" in ua_table


def test_bootstrap_identical_systems_not_significant(tmp_path):
    refs = (np.arange(60) % 4).tolist()
    preds = _noisy(refs, 0.6, np.random.default_rng(1), 4)
    _fake_run(tmp_path, "a_00000000", "superb", "speech_four", 1, refs, preds)
    _fake_run(tmp_path, "b_00000000", "superb", "speech_four", 1, refs, preds)
    res = results.paired_bootstrap(tmp_path / "a_00000000/superb/speech_four",
                                   tmp_path / "b_00000000/superb/speech_four/seed1", num_samples=300)
    for m in ("ua", "macro_f1"):
        r = res["metrics"][m]
        assert r["delta"] == 0 and r["p"] == 1.0 and not r["significant"] and r["ci"] == [0.0, 0.0]


def test_bootstrap_detects_a_real_difference_and_is_seeded(tmp_path):
    rng = np.random.default_rng(2)
    refs = (np.arange(200) % 4).tolist()
    _fake_run(tmp_path, "good_00000000", "superb", "speech_four", 1, refs, _noisy(refs, 0.9, rng, 4))
    _fake_run(tmp_path, "bad_00000000", "superb", "speech_four", 1, refs, _noisy(refs, 0.4, rng, 4))
    a, b = tmp_path / "good_00000000/superb/speech_four", tmp_path / "bad_00000000/superb/speech_four"
    res = results.paired_bootstrap(a, b, num_samples=1000, seed=3)
    r = res["metrics"]["ua"]
    assert r["delta"] > 0.3 and r["significant"] and r["p"] == pytest.approx(1 / 1001)
    assert r["ci"][0] < r["delta"] < r["ci"][1] and r["ci"][0] > 0
    assert results.paired_bootstrap(a, b, num_samples=1000, seed=3) == res
    # with few utterances a small difference is not significant
    refs = [0, 1, 2, 3] * 3
    p1 = list(refs)
    p2 = list(refs)
    p2[0] = 1
    _fake_run(tmp_path, "c_00000000", "superb", "speech_four", 1, refs, p1)
    _fake_run(tmp_path, "d_00000000", "superb", "speech_four", 1, refs, p2)
    small = results.paired_bootstrap(tmp_path / "c_00000000/superb/speech_four",
                                     tmp_path / "d_00000000/superb/speech_four", num_samples=1000)
    assert not small["metrics"]["ua"]["significant"]
    assert results.main(["bootstrap", str(a), str(b), "--num_samples", "200"]) == 0


def test_bootstrap_refuses_different_test_sets(tmp_path):
    _fake_run(tmp_path, "a_00000000", "superb", "speech_four", 1, [0, 1, 2, 3], [0, 1, 2, 3])
    _fake_run(tmp_path, "b_00000000", "superb", "speech_four", 1, [0, 1, 2, 2], [0, 1, 2, 3])
    with pytest.raises(ValueError, match="same test utterances"):
        results.paired_bootstrap(tmp_path / "a_00000000/superb/speech_four", tmp_path / "b_00000000/superb/speech_four")
    with pytest.raises(FileNotFoundError, match="run stage 4"):
        results.paired_bootstrap(tmp_path / "nothing", tmp_path / "b_00000000/superb/speech_four")
    assert results.main(["--exp", str(tmp_path / "empty")]) == 1


def test_one_table_per_modality_with_its_own_columns(tmp_path):
    refs = [0, 1, 2, 3] * 5
    _fake_run(tmp_path, "fbank_00000000", "superb", "speech_four", 1, refs, refs)
    for task in ("text_four", "multi_four", "text_all", "multi_all"):
        c = len(get_task(task).classes)
        r = (np.arange(21) % c).tolist()
        _fake_run(tmp_path, "textbase_11111111", "superb", task, 1, r, r, modality="text")
    _fake_run(tmp_path, "clip_22222222", "paper", "video_four", 1, refs, [0] * 20, modality="visual")
    text = results.write_results(tmp_path, tmp_path / "R.md", num_samples=100)
    ua = text.split("## UA", 1)[1].split("## WA", 1)[0]
    speech, rest = ua.split("### Speech", 1)[1].split("### Text", 1)
    textt, visual = rest.split("### Visual", 1)
    assert "| Upstream (tag) | Head | Speech(Four) |" in speech and "fbank" in speech and "textbase" not in speech
    assert "| Upstream (tag) | Head | Text(Four) | Multi(Four) | Text(All) | Multi(All) | Mean |" in textt
    assert "textbase (`textbase_11111111`) | superb | 100.00 | 100.00 | 100.00 | 100.00 | 100.00 |" in textt
    assert "| Upstream (tag) | Head | Visual(Four) |" in visual and "| clip (`clip_22222222`) | paper | 25.00 |" in visual
    assert "Visual(Four) = `video_four`: labels `utt2emo_video`, 4 classes" in text
    # a table configuration with other columns and no Mean
    conf = tmp_path / "results.yaml"
    conf.write_text("tables:\n  - {title: Words, modality: text, columns: [text_all, text_four], mean: false}\n")
    text = results.write_results(tmp_path, tmp_path / "R2.md", num_samples=100, results_conf=conf)
    ua = text.split("## UA", 1)[1].split("## WA", 1)[0]
    assert "### Words" in ua and "| Upstream (tag) | Head | Text(All) | Text(Four) | Multi(All) | Multi(Four) |" in ua
    assert "### Speech" in ua and "### Visual" in ua   # modalities without a table get their own
    conf.write_text("tables:\n  - {title: Words, columns: [text_all]}\n")
    with pytest.raises(ValueError, match="table 1 lacks modality"):
        results.write_results(tmp_path, tmp_path / "R3.md", results_conf=conf)
