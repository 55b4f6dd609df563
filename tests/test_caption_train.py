"""Caption training and scoring end to end on synthetic data: learnability against the two baselines,
resume after a kill to identical weights, bad input (missing / empty / long captions, missing files), the CLIs."""

from __future__ import annotations

import json

import pytest
import torch

from etser.learn import loop
from etser.caption.data import read_captions
from etser.caption.metrics import load_metrics_config
from etser.caption.score import main as score_main, score_baseline, score_exp
from etser.caption.train import load_config, main as train_main, train
from etser.datadir import read_table, write_table
from tests.helpers_caption import make_caption_corpus, tiny_decoder_dir

# a small decoder decoding its best epoch (tests of averaging set average_last themselves)
TINY = ["decoder_conf.d_model=32", "decoder_conf.ffn_dim=64", "decoder_conf.num_layers=1", "decoder_conf.nhead=2",
        "adaptor_conf.hidden_dim=32", "optim_conf.lr=3.0e-3", "batch_size=8", "average_last=null"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _mconf():
    conf = load_metrics_config(None)
    conf.update(metrics=["bleu4", "rouge_l", "cider_d"], ptb_tokenizer=False)
    return conf


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_scratch_decoder_beats_both_baselines(tmp_path, repo_root, lang):
    dd, fd = make_caption_corpus(tmp_path, sizes={"train": 120, "val": 24, "test": 40}, lang=lang, kinds=("style",))
    conf = load_config(repo_root / "conf/caption/transformer.yaml", TINY + ["max_epochs=25"])
    train(conf, "style", dd, fd, tmp_path / "exp", seed=1)
    model = score_exp(tmp_path / "exp", ["test"], dd, fd, _mconf())[0]["scores"]
    for name in ("frequent", "nearest"):
        base = score_baseline(name, "style", tmp_path / name, ["test"], dd, fd, _mconf())[0]["scores"]
        for metric in ("bleu4", "rouge_l"):
            assert model[metric] > base[metric], (name, metric, model, base)
    out = tmp_path / "exp" / "decode_test"
    lines = (out / "hyp_ref.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 41 and lines[1].count("\t") == 2
    assert json.loads((out / "metrics.json").read_text())["notes"]["segmentation"] == ("word" if lang == "en" else "char")


class Killed(Exception):
    pass


@pytest.mark.parametrize("decoder", ["transformer", "gpt2"])
def test_resume_after_kill_gives_identical_weights(tmp_path, repo_root, monkeypatch, decoder):
    dd, fd = make_caption_corpus(tmp_path, sizes={"train": 24, "val": 8}, kinds=("speaker",))
    if decoder == "transformer":
        conf = load_config(repo_root / "conf/caption/transformer.yaml", TINY + ["max_epochs=4", "patience=null"])
    else:  # frozen pretrained decoder: checkpoints hold the trainable weights only
        d = tiny_decoder_dir(tmp_path / "gpt2", "gpt2")
        conf = load_config(repo_root / "conf/caption/gpt2.yaml",
                           [f"decoder_dir={d}", "freeze_decoder=true", "adaptor_conf.hidden_dim=16", "max_epochs=4",
                            "patience=null", "batch_size=8", "select_metric=bleu4"])
    a = train(conf, "speaker", dd, fd, tmp_path / "a", seed=3)

    real = loop.atomic_save

    def save_then_die(obj, path):
        real(obj, path)
        if path.name == "epoch2.pt":
            raise Killed()

    monkeypatch.setattr(loop, "atomic_save", save_then_die)
    with pytest.raises(Killed):
        train(conf, "speaker", dd, fd, tmp_path / "b", seed=3)
    monkeypatch.setattr(loop, "atomic_save", real)
    b = train(conf, "speaker", dd, fd, tmp_path / "b", seed=3)
    assert "resuming" in (tmp_path / "b" / "train.log").read_text()
    assert a["best_epoch"] == b["best_epoch"] and a["best_val"]["val_loss"] == b["best_val"]["val_loss"]
    for name in ("best.pt", "checkpoints/epoch4.pt"):
        sa = torch.load(tmp_path / "a" / name, weights_only=False)["model"]
        sb = torch.load(tmp_path / "b" / name, weights_only=False)["model"]
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    # a finished exp dir is skipped
    assert train(conf, "speaker", dd, fd, tmp_path / "b", seed=3)["best_epoch"] == b["best_epoch"]


def test_missing_empty_punctuation_and_long_captions_are_counted(tmp_path, repo_root):
    dd, fd = make_caption_corpus(tmp_path, sizes={"train": 20, "val": 6, "test": 6}, kinds=("emotion",))
    path = dd / "train" / "utt2caption_emotion"
    caps = read_table(path)
    utts = sorted(caps)
    del caps[utts[0]], caps[utts[1]]          # two without a caption
    caps[utts[2]] = ""                          # one empty
    caps[utts[3]] = " ".join(["loud"] * 200)    # one far longer than max_caption_tokens
    caps[utts[4]] = "。……"                      # punctuation only: no word to learn or to match
    caps[utts[5]] = "..."
    write_table(path, caps)
    lines = []
    cs = read_captions(dd / "train", "emotion", log=lines.append)
    assert cs.counts == {"with_caption": 15, "empty": 1, "no_words": 2, "without_caption": 2}
    assert not {utts[2], utts[4], utts[5]} & set(cs.utts)
    assert any(utts[4] in x and utts[5] in x and "punctuation-only" in x for x in lines), lines
    conf = load_config(repo_root / "conf/caption/transformer.yaml", TINY + ["max_epochs=1", "max_caption_tokens=16"])
    summary = train(conf, "emotion", dd, fd, tmp_path / "exp", seed=1)
    assert summary["truncated_train_captions"] == 1
    log = (tmp_path / "exp" / "train.log").read_text()
    assert "left out 1 with an empty caption, 2 of punctuation only and 2 of 20 without one" in log
    assert f"punctuation-only emotion caption(s) left out: {utts[4]} '。……', {utts[5]} '...'" in log
    assert "1 training caption(s) longer than max_caption_tokens 16 are truncated" in log
    # a set whose captions are all punctuation has nothing to train on: one error naming the file
    write_table(path, {u: "。" for u in utts})
    with pytest.raises(ValueError, match="utt2caption_emotion: no emotion caption with words"):
        read_captions(dd / "train", "emotion", log=lambda *_: None)
    with pytest.raises(FileNotFoundError, match="utt2caption_overall"):
        read_captions(dd / "train", "overall")


def test_clis_train_score_and_bad_dirs(tmp_path, repo_root, caplog):
    dd, fd = make_caption_corpus(tmp_path, sizes={"train": 16, "val": 6, "test": 6}, kinds=("overall",))
    exp = tmp_path / "exp" / "caption_transformer" / "caption_overall" / "seed1"
    args = ["--config", str(repo_root / "conf/caption/transformer.yaml"), "--kind", "overall", "--seed", "1",
            "--data_dir", str(dd), "--feats_dir", str(fd), "--exp_dir", str(exp)]
    assert train_main(args + [f"--conf={c}" for c in TINY + ["max_epochs=2"]]) == 0
    assert (exp / "tokenizer.json").is_file() and (exp / "best.pt").is_file() and (exp / "done").is_file()
    mcfg = tmp_path / "metrics.yaml"
    mcfg.write_text("metrics: [bleu4, rouge_l, cider_d, bertscore]\ntokenization: char\n")
    assert score_main(["--exp_dir", str(exp), "--sets", "val test", "--data_dir", str(dd), "--feats_dir", str(fd),
                       "--metrics_config", str(mcfg)]) == 0
    for s in ("val", "test"):
        m = json.loads((exp / f"decode_{s}" / "metrics.json").read_text())
        assert m["set"] == s and m["num_utts"] == 6 and m["decoder"] == "transformer"
        assert m["scores"]["bertscore"] is None and "bertscore.model_dir" in m["notes"]["bertscore"]
    assert score_main(["--baseline", "frequent", "--kind", "overall", "--exp_dir", str(tmp_path / "freq"),
                       "--sets", "test", "--data_dir", str(dd), "--feats_dir", str(fd),
                       "--metrics_config", str(mcfg)]) == 0
    # a decoder dir that does not exist: one message, nothing written
    bad = tmp_path / "bad"
    cfg = tmp_path / "gpt2.yaml"
    cfg.write_text(f"decoder: gpt2\ndecoder_dir: {tmp_path / 'absent'}\n")
    caplog.clear()
    assert train_main(["--config", str(cfg), "--kind", "overall", "--data_dir", str(dd), "--feats_dir", str(fd),
                       "--exp_dir", str(bad)]) == 1
    assert not bad.exists() and "not a local Hugging Face model directory" in caplog.text


def test_frames_read_per_batch_train_the_same_weights(tmp_path, repo_root):
    dd, fd = make_caption_corpus(tmp_path, sizes={"train": 16, "val": 6}, kinds=("style",))
    states = []
    for gb in (2.0, 0.0):
        conf = load_config(repo_root / "conf/caption/transformer.yaml", TINY + ["max_epochs=2", f"preload_frames_gb={gb}"])
        # the config differs only in where frames live: compare the weights, not the hashes
        train(conf, "style", dd, fd, tmp_path / f"exp{gb}", seed=1)
        states.append(torch.load(tmp_path / f"exp{gb}" / "best.pt", weights_only=False)["model"])
    assert "reading per batch" in (tmp_path / "exp0.0" / "train.log").read_text()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_changed_captions_features_or_config_retrain_or_refuse(tmp_path, repo_root, caplog):
    from etser.provenance import StaleError

    dd, fd = make_caption_corpus(tmp_path, sizes={"train": 16, "val": 6, "test": 6}, kinds=("style",))
    conf = load_config(repo_root / "conf/caption/transformer.yaml", TINY + ["max_epochs=1"])
    exp = tmp_path / "exp"
    first = train(conf, "style", dd, fd, exp, seed=1)
    assert json.loads((exp / "provenance.json").read_text())["captions"]["train"]
    caplog.clear()
    assert train(conf, "style", dd, fd, exp, seed=1) == first and "up to date; skipping" in caplog.text
    # a training caption corrected: refused on request (nothing touched), else retrained
    path = dd / "train" / "utt2caption_style"
    caps = read_table(path)
    caps[sorted(caps)[0]] = "fast and loud"
    write_table(path, caps)
    best = (exp / "best.pt").stat().st_mtime_ns
    with pytest.raises(StaleError, match=r"captions\.train: changed"):
        train(conf, "style", dd, fd, exp, seed=1, on_change="refuse")
    assert (exp / "best.pt").stat().st_mtime_ns == best
    caplog.clear()
    train(conf, "style", dd, fd, exp, seed=1)
    assert "retraining from scratch, its inputs changed: captions.train: changed" in caplog.text
    # features of the validation set re-extracted (their stage-2 record changed), then a config edited
    meta = json.loads((fd / "val" / "meta.json").read_text())
    (fd / "val" / "meta.json").write_text(json.dumps({**meta, "config_hash": "0" * 8}))
    caplog.clear()
    train(conf, "style", dd, fd, exp, seed=1)
    assert "its inputs changed: features.val.config_hash: changed" in caplog.text
    caplog.clear()
    train(load_config(repo_root / "conf/caption/transformer.yaml", TINY + ["max_epochs=2"]), "style", dd, fd, exp,
          seed=1)
    assert "its inputs changed: config: changed" in caplog.text
    assert json.loads((exp / "done").read_text())["best_epoch"] in (1, 2)


def test_average_last_decodes_the_mean_of_the_last_epochs(tmp_path, repo_root, monkeypatch):
    from etser.caption import train as train_module
    from etser.caption.decode import load_trained

    dd, fd = make_caption_corpus(tmp_path, sizes={"train": 16, "val": 6}, kinds=("style",))
    conf = load_config(repo_root / "conf/caption/transformer.yaml",
                       TINY + ["max_epochs=4", "keep_checkpoints=3", "average_last=3"])
    # the averaged epochs are pruned once done (to the last); kept here to check the mean against them
    pruned = []
    monkeypatch.setattr(train_module, "prune_epochs", lambda d, keep: pruned.append((d, keep)))
    summary = train(conf, "style", dd, fd, tmp_path / "exp", seed=1)
    assert pruned == [(tmp_path / "exp", 1)]
    assert summary["averaged_epochs"] == [2, 3, 4]
    epochs = [torch.load(tmp_path / "exp" / "checkpoints" / f"epoch{e}.pt", weights_only=True)["model"]
              for e in (2, 3, 4)]
    best = torch.load(tmp_path / "exp" / "best.pt", weights_only=True)
    assert best["averaged_epochs"] == [2, 3, 4] and best["epoch"] == 4
    moved = 0
    for k, v in best["model"].items():
        if v.is_floating_point():
            mean = (epochs[0][k].double() + epochs[1][k].double() + epochs[2][k].double()) / 3
            assert torch.equal(v, mean.to(v.dtype)), k
            moved += not torch.equal(v, epochs[2][k])
    assert moved, "the mean equals the last epoch: nothing was averaged"
    # scoring and inference load it like any best.pt; its val row is the averaged model's own
    model, info = load_trained(tmp_path / "exp")
    assert info["epoch"] == 4 and "val_rouge_l" in info["val"]
    assert "the mean of epochs [2, 3, 4]" in (tmp_path / "exp" / "train.log").read_text()


@pytest.mark.parametrize("extra, message", [(["keep_checkpoints=2", "average_last=3"], "at most keep_checkpoints (2)"),
                                            (["average_last=10", "max_epochs=8"], "from 2 to max_epochs (8)"),
                                            (["average_last=1"], "an integer from 2"),
                                            (["average_last=true"], "got True")])
def test_average_last_is_checked_with_the_config(repo_root, extra, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(repo_root / "conf/caption/transformer.yaml", TINY + extra)


def test_averaged_training_keeps_only_its_last_epoch_checkpoint(tmp_path, repo_root):
    dd, fd = make_caption_corpus(tmp_path, sizes={"train": 16, "val": 6}, kinds=("style",))
    conf = load_config(repo_root / "conf/caption/transformer.yaml",
                       TINY + ["max_epochs=3", "keep_checkpoints=3", "average_last=2"])
    train(conf, "style", dd, fd, tmp_path / "exp", seed=1)
    assert sorted(p.name for p in (tmp_path / "exp" / "checkpoints").iterdir()) == ["epoch3.pt"]
    # a rerun finds the training done and keeps best.pt, the mean of epochs 2 and 3
    before = (tmp_path / "exp" / "best.pt").read_bytes()
    train(conf, "style", dd, fd, tmp_path / "exp", seed=1)
    assert (tmp_path / "exp" / "best.pt").read_bytes() == before
    assert torch.load(tmp_path / "exp" / "best.pt", weights_only=True)["averaged_epochs"] == [2, 3]
