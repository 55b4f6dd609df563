"""Utterances that stage 2 excluded from one stream: a fusion model never loses them silently (refused, or
missing modalities with allow_missing, as docs/fusion.md says), and RESULTS.md says how many utterances each
cell was scored on wherever rows of a task were scored on different numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from etser.datadir import write_table
from etser.report.results import write_results
from etser.learn.score import score_exp
from etser.learn.train import load_config, train
from tests.test_fusion_recipe import SIZES, _conf, make_fusion_corpus

ROOT = Path(__file__).resolve().parents[1]
GONE = {"train": "S02-train0001", "test": "S02-test0001"}  # unreadable mp4s: stage 2 excluded them (visual)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("excl")
    data, dumps = make_fusion_corpus(root, drop={"visual": list(GONE.values())})
    for set_name, utt in GONE.items():
        write_table(dumps["visual"] / set_name / "excluded", {utt: "no decodable video: moov atom not found"})
    return root, data, dumps


def test_stage2_exclusion_of_one_stream_stops_fusion_naming_it(corpus, tmp_path):
    _, data, dumps = corpus
    with pytest.raises(ValueError, match=rf"stream visual \({dumps['visual']}/train\) lacks 1: S02-train0001 "
                                         rf"\(1 excluded by stage 2, see {dumps['visual']}/train/excluded\).*"
                                         r"allow_missing"):
        train(_conf("attention"), "multi_four", data, None, tmp_path / "refused", 1, fusion_streams=dumps)


def test_allow_missing_keeps_them_as_missing_modalities(corpus, tmp_path):
    _, data, dumps = corpus
    exp = tmp_path / "allowed"
    train(_conf("attention", allow_missing="true"), "multi_four", data, None, exp, 1, fusion_streams=dumps)
    assert "stream visual" in (exp / "train.log").read_text()
    assert score_exp(exp, ["test"])["test"]["num_utts"] == SIZES["test"]


def test_results_md_gives_the_counts_of_rows_scored_on_other_utterances(corpus):
    root, data, dumps = corpus
    exp = root / "exp"
    fusion = exp / "fusion_speech+text+visual" / "attention" / "multi_four" / "seed1"
    train(_conf("attention", allow_missing="true"), "multi_four", data, None, fusion, 1, fusion_streams=dumps)
    score_exp(fusion, ["test"])
    for mod in ("speech", "visual"):
        one = exp / f"syn_{mod}" / "superb" / "multi_four" / "seed1"
        conf = load_config(ROOT / "conf" / "train" / "superb.yaml", ["max_epochs=2"])
        train(conf, "multi_four", data, dumps[mod], one, 1)
        assert score_exp(one, ["test"])["test"]["num_utts"] == SIZES["test"] - (mod == "visual")
    text = write_results(exp, exp / "RESULTS.md", num_samples=10)
    assert "`[N utts]` after a cell: the number of utterances it was scored on" in text
    speech = text.split("### Speech", 1)[1].split("###", 1)[0]
    visual = text.split("### Visual", 1)[1].split("###", 1)[0]
    er = text.split("## Multimodal emotion recognition", 1)[1].split("\n## ", 1)[0]
    assert f"[{SIZES['test']} utts]" in speech and f"[{SIZES['test'] - 1} utts]" in visual
    assert er.count(f"[{SIZES['test']} utts]") == 3  # WF1, UA, WA of Multimodal(Four)
    assert f"[{SIZES['test'] - 1} utts]" in er or f"[{SIZES['test']} utts]" in er.split("Best single", 1)[1]
    # the visual-only pattern skips the utterance without visual features: that column says so
    miss = text.split("## Missing modalities", 1)[1]
    row = next(line for line in miss.splitlines() if "| attention |" in line)
    head = next(line for line in miss.splitlines() if line.startswith("| Features |"))
    cells = dict(zip(head.strip("| ").split(" | "), row.strip("| ").split(" | ")))
    assert cells["visual"].endswith(f"[{SIZES['test'] - 1} utts]")
    assert cells["speech"].endswith(f"[{SIZES['test']} utts]")
