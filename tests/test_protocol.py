"""Training protocols (conf/protocol/<name>.yaml): the switch, each training choice, official on every fusion
algorithm, RESULTS.md naming the protocol."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import torch

from etser.learn import loop
from etser.learn.config import load_protocol
from etser.learn.trainconf import load_config
from etser.launch import plan
from etser.models.heads import build_head
from helpers_fusion import NAMES, inputs, small

REPO = Path(__file__).resolve().parents[1]
OFFICIAL = load_protocol(REPO / "conf/protocol/official.yaml")
CORRECTED = load_protocol(REPO / "conf/protocol/corrected.yaml")


def _runs():
    runs = [plan.Run("dump/egemaps_1", "egemaps_1", "speech", head, "speech_four", s,
                     f"exp/egemaps_1/{head}/speech_four/seed{s}") for head in ("superb", "paper") for s in (1, 2)]
    fruns = [plan.FusionRun((("speech", "dump/a"), ("text", "dump/b")), "fusion_a+b", algo, "multi_four", s,
                            f"exp/fusion_a+b/{algo}/multi_four/seed{s}") for algo in ("attention", "mult") for s in (1, 2)]
    return runs, fruns


def _conf_items(line: str) -> list[str]:
    args = shlex.split(line)
    return [args[i + 1] for i, a in enumerate(args) if a == "--conf"]


# ---------------------------------------------------------------- the switch

def test_corrected_gives_todays_lines_and_official_adds_exactly_its_file():
    runs, fruns = _runs()
    today = plan.train_lines(runs, "ours", "data", 0, 1, False, None)
    today_f = plan.fusion_train_lines(fruns, "data", 0, 1, False, None)
    assert plan.train_lines(runs, "ours", "data", 0, 1, False, None, protocol=CORRECTED) == today
    assert plan.fusion_train_lines(fruns, "data", 0, 1, False, None, protocol=CORRECTED) == today_f
    official = plan.train_lines(runs, "ours", "data", 0, 1, False, None, protocol=OFFICIAL)
    official_f = plan.fusion_train_lines(fruns, "data", 0, 1, False, None, protocol=OFFICIAL)
    want = ["max_epochs=100", "patience=null", "shuffle=false", "protocol=official"]
    want_f = ["max_epochs=100", "patience=null", "shuffle=false", "head_conf.normalize=false",
              "head_conf.fusion_conf.official=true", "protocol=official"]
    for old, new in zip(today, official):
        assert _conf_items(new) == _conf_items(old) + want
        # nothing else changes: the line without the protocol's --conf items is today's
        args = shlex.split(new)
        for item in want:
            i = args.index(item)
            del args[i - 1:i + 1]
        assert args == shlex.split(old)
    for old, new in zip(today_f, official_f):
        assert _conf_items(new) == _conf_items(old) + want_f


def test_the_protocols_options_reach_the_resolved_train_configs():
    items = plan.protocol_conf(OFFICIAL, "fusion")
    conf = load_config(REPO / "conf/train/fusion.yaml", ["head_conf.algo=mfm", *items])
    assert (conf["max_epochs"], conf["patience"], conf["shuffle"], conf["protocol"]) == (100, None, False, "official")
    assert conf["head_conf"]["normalize"] is False and conf["head_conf"]["fusion_conf"]["official"] is True
    plain = load_config(REPO / "conf/train/fusion.yaml", ["head_conf.algo=mfm"])
    assert (plain["patience"], plain["shuffle"], plain["protocol"]) == (20, True, "corrected")
    assert plain["head_conf"]["normalize"] is True and plain["head_conf"]["fusion_conf"]["official"] is False
    conf = load_config(REPO / "conf/train/paper.yaml", plan.protocol_conf(OFFICIAL, "classifier"))
    assert (conf["patience"], conf["shuffle"], conf["head_conf"]["normalize"]) == (None, False, False)


def test_run_options_of_a_protocol_unless_given():
    out = plan.protocol_shell(OFFICIAL, {"seeds"})
    values = dict(line.split("=", 1) for line in out.splitlines())
    assert values["heads"] == "paper" and values["search_trials"] == "50" and "fusion_trials" not in values
    assert values["search_runs"] == "6" and "seeds" not in values and values["protocol_name"] == "official"
    assert dict(line.split("=", 1) for line in plan.protocol_shell(CORRECTED, set()).splitlines())["seeds"] == "'1 2 3'"


def test_a_bad_protocol_is_refused_naming_the_file(tmp_path):
    (tmp_path / "mine.yaml").write_text("name: mine\nversion: 1\ntrain: {patiense: 3}\n")
    proto = str(tmp_path / "mine.yaml")
    errors = plan.check_options([], ["superb"], [], ["1"], protocol=proto, conf_root=REPO)
    assert any("--heads superb under protocol mine" in e and "patiense" in e for e in errors), errors
    (tmp_path / "mine.yaml").write_text("name: mine\nversion: 1\nfusion: {head_conf.fusion_conf.offical: true}\n")
    errors = plan.check_options([], ["superb"], [], ["1"], protocol=proto, conf_root=REPO, fusion=["tfn"],
                                fusion_streams="speech=egemaps text=text_baseline")
    assert any("--fusion tfn under protocol mine" in e and "offical" in e for e in errors), errors
    (tmp_path / "other.yaml").write_text("name: mine\nversion: 1\n")
    with pytest.raises(ValueError, match="other.yaml: name must be 'other'"):
        load_protocol(tmp_path / "other.yaml")
    with pytest.raises(FileNotFoundError, match="known: corrected, official"):
        load_protocol(REPO / "conf/protocol/offical.yaml")
    assert plan.check_options([], ["superb", "paper"], [], ["1"], protocol=str(REPO / "conf/protocol/official.yaml"),
                              conf_root=REPO, fusion=NAMES, fusion_streams="speech=egemaps text=text_baseline") == []


# ---------------------------------------------------------------- each training choice

def _epochs(shuffle: bool, patience, n: int = 10, epochs: int = 3, tmp_path: Path = None):
    """The batches a loop over ``n`` examples (batch 4) trains on, and its final state; val never improves."""
    model = torch.nn.Linear(1, 1)
    seen = []

    def step(idx):
        seen.append(list(idx))
        return model(torch.ones(len(idx), 1)).sum() * 0.0

    fit = loop.Fit(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), num_train=n, batch_size=4,
                   step=step, clip=lambda: None, validate=lambda: ({}, 0.5),
                   better=lambda value, best: value > best, best_record=lambda e, r: {},
                   epoch_line=lambda e, r, i: "", shuffle=shuffle)
    state = {"epoch": 0, "best": -1.0, "best_epoch": 0, "bad_epochs": 0, "history": []}
    (tmp_path / "checkpoints").mkdir(exist_ok=True)
    out = loop.run_epochs(fit, tmp_path, "h", torch.Generator().manual_seed(1), state, "cpu", epochs, patience, 1,
                          lambda s: None)
    return seen, out


def test_unshuffled_batches_take_the_training_set_in_order(tmp_path):
    seen, _ = _epochs(False, None, tmp_path=tmp_path)
    assert seen == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]] * 3
    shuffled, _ = _epochs(True, None, tmp_path=tmp_path)
    assert sorted(sum(shuffled[:3], [])) == list(range(10)) and shuffled[:3] != seen[:3]


def test_no_early_stop_trains_every_epoch(tmp_path):
    _, out = _epochs(False, None, epochs=6, tmp_path=tmp_path)
    assert out["epoch"] == 6 and out["stopped"] == "max_epochs 6" and out["best_epoch"] == 1
    (tmp_path / "early").mkdir()
    _, out = _epochs(False, 2, epochs=6, tmp_path=tmp_path / "early")
    assert out["epoch"] == 3 and out["stopped"] == "no val improvement for 2 epochs"


@pytest.mark.parametrize("normalize", [True, False])
def test_raw_features_reach_the_fusion_model_unscaled(normalize):
    streams = [{"name": "speech", "dim": 3, "layers": [0]}, {"name": "text", "dim": 2, "layers": [0]}]
    head = build_head("fusion", {"algo": "attention", "fusion_conf": {"hidden_dim": 8}, "normalize": normalize},
                      streams, 4)
    g = torch.Generator().manual_seed(0)
    pooled = {n: (10 + 5 * torch.randn(20, 1, d, generator=g), torch.ones(20, 1, d)) for n, d in (("speech", 3),
                                                                                                 ("text", 2))}
    head.fit_normalizers(pooled)
    x = {n: 10 + torch.randn(4, 1, d, generator=g) for n, d in (("speech", 3), ("text", 2))}
    batch = {"streams": {n: {"mean": v, "present": torch.ones(4, dtype=torch.bool)} for n, v in x.items()}}
    inputs_, _, _ = head.inputs(batch)
    for n in x:
        raw = x[n].mean(1)
        assert torch.allclose(inputs_[n], raw) is (not normalize)


# ---------------------------------------------------------------- official on every algorithm

@pytest.mark.parametrize("name", NAMES)
def test_official_is_accepted_by_every_algorithm(name):
    model = small(name, official=True)
    x, lens = inputs(model)
    out = model(x, lens)
    assert torch.isfinite(out.logits).all()
    if not model.official_details:   # the official code equals ours: official changes nothing
        ours = small(name, official=False)
        assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), model.state_dict().values()))
        ours.eval(), model.eval()
        assert torch.equal(ours(x, lens).logits, model(x, lens).logits)


# ---------------------------------------------------------------- RESULTS.md

def _run(exp: Path, tag, head, task, seed, protocol, modality="speech", extra=None, wf1=0.5):
    from etser.tasks import get_task

    d = exp / tag / head / task / f"seed{seed}"
    (d / "decode_test").mkdir(parents=True)
    m = {"task": task, "head": head, "seed": seed, "tag": tag, "upstream": tag, "set": "test",
         "classes": list(get_task(task).classes), "modality": modality, "ua": wf1, "wa": wf1, "macro_f1": wf1,
         "weighted_f1": wf1, "num_utts": 10}
    if modality == "fusion":
        m.update(head="fusion", algo=head, fusion_level="utterance", stream_upstreams={"speech": "egemaps", "text": "tb"},
                 stream_modalities={"speech": "speech", "text": "text"})
    (d / "decode_test" / "metrics.json").write_text(json.dumps(m))
    conf = {"protocol": protocol, "max_epochs": 100, "patience": None if protocol == "official" else 20,
            "shuffle": protocol != "official",
            "head_conf": {"normalize": protocol != "official", "fusion_conf": {"official": protocol == "official"}}}
    if protocol is None:
        del conf["protocol"]
    if protocol == "official":   # the row's search, as etser.learn.search.select records it
        (d.parent / "search").mkdir(exist_ok=True)
        (d.parent / "search" / "selection.json").write_text(json.dumps(
            {"metric": "weighted_f1", "draws": 50, "runs": 6, "best_draw": 1, "best_values": {}}))
    conf.update(extra or {})
    import yaml
    (d / "config.yaml").write_text(yaml.safe_dump(conf))
    return m


def test_results_name_the_protocol_over_every_table_and_list_deviations(tmp_path):
    from etser.report import results

    for s in (1, 2, 3, 4, 5, 6):
        _run(tmp_path, "egemaps_1", "paper", "speech_four", s, "official")
        _run(tmp_path, "fusion_a+b", "lmf", "multi_four", s, "official", "fusion")
        # a hand-made deviation: early stopping back on for attention
        _run(tmp_path, "fusion_a+b", "attention", "multi_four", s, "official", "fusion", {"patience": 5})
    (tmp_path / "fusion_a+b/attention/multi_four/search/selection.json").unlink()   # and no search
    for s in (1, 2, 3):   # no protocol recorded: made before protocols, i.e. corrected
        _run(tmp_path, "egemaps_1", "superb", "speech_four", s, None)
    for s in (1, 2, 3, 4, 5, 6):   # the features' setup: the upstream config's official flag (copied at training)
        (tmp_path / "egemaps_1/paper/speech_four" / f"seed{s}/upstream.yaml").write_text("official: true\n")
    text = results.write_results(tmp_path, tmp_path / "RESULTS.md", num_samples=50)
    assert "Features: `egemaps_1` (official: true)." in text
    for section in ("## UA", "## Multimodal emotion recognition"):
        part = text.split(section, 1)[1]
        assert "Protocol" in part.split("|", 1)[0], section
    ua = text.split("## UA", 1)[1].split("## WA", 1)[0]
    assert "**official** (`conf/protocol/official.yaml` version 1" in ua and "**corrected**" in ua
    # superb is not the official protocol's head, but its runs are corrected ones: no deviation for them
    assert "egemaps_1 superb" not in ua.split("Deviations", 1)[-1] if "Deviations" in ua else True
    er = text.split("## Multimodal emotion recognition", 1)[1].split("##", 1)[0]
    assert "Protocol: **official**" in er
    dev = er.split("Deviations from the protocol chosen by hand:", 1)[1].split("Searched rows", 1)[0]
    assert "fusion_a+b attention: patience 5 (protocol: null)" in dev and "lmf" not in dev
    assert "search draws 0 (protocol: 50)" in dev


def test_official_sentiment_discrete_columns_come_from_lmf(tmp_path):
    from etser.report import results

    for s in (1, 2, 3, 4, 5, 6):
        for algo, wf1 in (("attention", 0.30), ("lmf", 0.70)):
            for task in ("multi_four", "multi_all"):
                _run(tmp_path, "fusion_a+b", algo, task, s, "official", "fusion", wf1=wf1)
        m = _run(tmp_path, "fusion_a+b", "attention", "sentiment", s, "official", "fusion")
        path = tmp_path / "fusion_a+b/attention/sentiment" / f"seed{s}/decode_test/metrics.json"
        m.update(kind="continuous", f1_weighted=0.6, acc2=0.6, mae=0.5, pearson=0.1, ccc=0.1)
        path.write_text(json.dumps(m))
    text = results.write_results(tmp_path, tmp_path / "RESULTS.md", num_samples=50)
    table = text.split("## Multimodal sentiment analysis", 1)[1].split("Continuous in detail", 1)[0]
    row = next(line for line in table.splitlines() if "| attention |" in line)
    assert "| attention | 70.00 ± 0.00 | 70.00 ± 0.00 | 60.00 ± 0.00 |" in row, row   # not attention's 30
    assert "attention: lmf" in table


@pytest.mark.parametrize("items,shuffle", [([], True), (plan.protocol_conf(OFFICIAL, "classifier"), False)])
def test_the_trainer_hands_the_protocols_shuffle_to_the_loop(tmp_path, monkeypatch, items, shuffle):
    from etser.learn import train
    from tests.helpers_feats import make_corpus

    data_dir, feats_dir = make_corpus(tmp_path, {"train": 24, "val": 12})
    seen, real = [], loop.run_epochs

    def spy(fit, *a, **k):
        seen.append(fit.shuffle)
        return real(fit, *a, **k)
    monkeypatch.setattr(train.loop, "run_epochs", spy)
    argv = ["--config", str(REPO / "conf/train/paper.yaml"), "--task", "speech_four", "--data_dir", str(data_dir),
            "--feats_dir", str(feats_dir), "--exp_dir", str(tmp_path / "exp")]
    for item in [*items, "max_epochs=2"]:   # the protocol's 100 epochs cut short
        argv += ["--conf", item]
    assert train.main(argv) == 0
    assert seen == [shuffle]
    done = json.loads((tmp_path / "exp" / "done").read_text())
    assert done["epochs"] == 2


def test_what_each_fix_is_worth_sets_both_protocols_side_by_side(tmp_path):
    from etser.report import protocols, results

    off, cor = tmp_path / "official", tmp_path / "corrected"
    for s, (a, b) in enumerate(((0.40, 0.60), (0.50, 0.70), (0.60, 0.80)), 1):
        _run(off, "fusion_a+b", "lmf", "multi_four", s, "official", "fusion", wf1=a)
        _run(cor, "fusion_a+b", "lmf", "multi_four", s, "corrected", "fusion", wf1=b)
        _run(off, "egemaps_1", "paper", "speech_four", s, "official", wf1=0.5)
        _run(cor, "egemaps_1", "superb", "speech_four", s, None, wf1=0.5 + 0.01 * s)
        _run(cor, "fusion_a+b", "tfn", "multi_four", s, "corrected", "fusion")   # one protocol only: no row
    lines = protocols.compare(off, cor)
    rows = [line for line in lines if line.startswith("| ") and "Features" not in line]
    assert rows == ["| egemaps + tb | lmf | Multi(Four) | 50.00 ± 10.00 | 70.00 ± 10.00 | +20.00 | 3 / 3 |",
                    "| egemaps_1 | paper / superb | Speech(Four) | 50.00 ± 0.00 | 52.00 ± 1.00 | +2.00 | 3 / 3 |"]
    text = results.write_results(off, off / "RESULTS.md", num_samples=50, compare_exp=cor)
    assert "## What each fix is worth" in text and "| egemaps + tb | lmf | Multi(Four) |" in text
