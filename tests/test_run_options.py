"""run.sh checks every option before anything happens: before --overwrite true deletes a thing, before any
job is launched; a misconfigured upstream or training config fails once, at the start."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers_faults import make_workdir, run_recipe, stamps


@pytest.fixture()
def workdir(tmp_path) -> Path:
    w = make_workdir(tmp_path / "w")
    # outputs of an earlier run that a bad command line must not touch
    for rel in ("data/train/wav.scp", "dump/x/train/pooled_mean.scp", "exp/x/superb/speech_four/seed1/done"):
        (w / rel).parent.mkdir(parents=True, exist_ok=True)
        (w / rel).write_text("kept\n")
    return w


@pytest.mark.parametrize("args, message", [
    (("--nj", "0"), "--nj 0 (a positive integer)"),
    (("--num_threads", "two"), "--num_threads two (a positive integer)"),
    (("--ngpu", "-1"), "--ngpu -1 (0 or a positive integer)"),
    (("--max_jobs_run", "0"), "--max_jobs_run 0 (a positive integer)"),
    (("--overwrite", "yes"), "option --overwrite: expects true or false, got 'yes'"),
    (("--on_change", "maybe"), "--on_change maybe (redo or refuse)"),
    (("--tag", "a/b"), "--tag a/b (a name, not a path)"),
    (("--seeds", "1 2 1"), "--seeds names 1 more than once"),
    (("--seeds", "1 x"), "--seeds: x is not an integer"),
    (("--tasks", "speech_four speech_four"), "--tasks names speech_four more than once"),
    (("--tasks", "speech_5"), "--tasks: unknown speech_5"),
    (("--heads", "superb superb"), "--heads names superb more than once"),
    (("--heads", "nohead"), "--heads: unknown nohead"),
    (("--upstreams", "fbank_no_cmvn fbank_no_cmvn"), "--upstreams names fbank_no_cmvn more than once"),
    (("--upstreams", "hubret_base"), "unknown upstream 'hubret_base'"),
    (("--fusion", "bogus"), "--fusion: unknown bogus; known: attention"),
    (("--fusion_streams", "speech=fbank_no_cmvn visual=nonexist"),
     "--fusion_streams visual=nonexist: nonexist is neither an upstream (conf/upstream/nonexist.yaml) nor a "
     "feature dir"),
    (("--fusion_streams", "speech=text_baseline text=fbank_no_cmvn"),
     "--fusion_streams speech=text_baseline: text_baseline is a text upstream (conf/upstream/text_baseline.yaml), "
     "not speech"),
    (("--fusion_tasks", "multi_5"), "--fusion_tasks: unknown multi_5"),
    (("--caption_kinds", "bogus"), "--caption_kinds: unknown bogus; known: speaker style emotion overall"),
    (("--caption_decoders", "nodecoder"),
     "--caption_decoders: caption decoder nodecoder: no conf/caption/nodecoder.yaml"),
    (("--caption_upstream", "text_baseline"), "--caption_upstream text_baseline: a text upstream"),
    (("--expdir", "data/train"), "--expdir data/train lies inside --data data"),
    (("--expdir", "data"), "--data data and --expdir data are the same dir"),
    (("--dumpdir", "exp/dump"), "--dumpdir exp/dump lies inside --expdir exp"),
    (("--dumpdir", "."), "--data data lies inside --dumpdir ."),
])
def test_bad_options_are_refused_before_anything(workdir, args, message):
    before = stamps(workdir)
    r = run_recipe(workdir, "--stage", "2", "--overwrite", "true", *args, timeout=300)
    assert r.returncode != 0
    assert message in r.stderr, r.stderr[-2000:]
    after = stamps(workdir)
    assert {k: v for k, v in after.items() if not k.startswith("exp/.run")} == \
           {k: v for k, v in before.items() if not k.startswith("exp/.run")}  # nothing deleted or written
    assert "Stage 2:" not in r.stderr  # no stage started


def test_a_training_config_with_an_unknown_key_fails_once_at_start(workdir):
    conf = workdir / "conf"
    conf.unlink()  # the workdir's own conf/, with one training config broken
    import shutil

    shutil.copytree(Path(__file__).resolve().parents[1] / "conf", conf)
    (conf / "train" / "superb.yaml").write_text((conf / "train" / "superb.yaml").read_text() + "learning_rate: 0.1\n")
    r = run_recipe(workdir, "--stage", "2", timeout=300)
    assert r.returncode != 0
    assert r.stderr.count("unknown option(s) learning_rate") == 1, r.stderr[-2000:]


def test_a_stage_checks_every_job_line_before_its_first_job(tmp_path):
    """A fusion stream named right but never extracted: stage 3 stops while planning, before the classifier
    trainings of the same stage start (not after them), naming the stream and the stage-2 run that makes it."""
    from etser.upstream import config_tag
    from tests.helpers_feats import make_corpus

    w = make_workdir(tmp_path / "w")
    upstream = w / "synthetic.yaml"
    upstream.write_text((Path(__file__).resolve().parents[1] / "conf/upstream/fbank_no_cmvn.yaml").read_text())
    tag = config_tag(upstream)
    make_corpus(w, {"train": 28, "val": 14, "test": 14}, num_layers=2, dim=8, frame_layers=None, tag=tag)
    r = run_recipe(w, "--stage", "3", "--stop_stage", "3", "--upstream", upstream, "--nj", "1", "--tasks",
                   "speech_four", "--seeds", "1", "--fusion", "attention",
                   "--fusion_streams", f"speech=dump/{tag} text=text_baseline", timeout=300)
    assert r.returncode != 0
    assert "fusion stream text: dump/text_baseline_" in r.stderr and "has no features (never extracted): run " \
        "./run.sh --stage 2 --stop_stage 2 --upstreams text_baseline" in r.stderr, r.stderr[-2000:]
    assert not list((w / "exp").rglob("*.log")) and not list((w / "exp").rglob("done")), r.stderr[-2000:]
