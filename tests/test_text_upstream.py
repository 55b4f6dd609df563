"""Text stage 2: tiny Hugging Face encoder and causal LM from one YAML, special tokens out of pooling,
long transcripts windowed or truncated, empty ones excluded, and the char n-gram baseline (fitted on train
only, the same in every job) learns words that carry the label."""

from __future__ import annotations

import json
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch
import yaml

from etser.datadir import read_table
from etser.features.extract import merge, run_job
from etser.features.text_encoders import token_windows
from etser.features.upstream import UpstreamError, load_config, main as upstream_main

REPO = Path(__file__).resolve().parents[1]
CHARS = "今天下午我们开会吃饭很开心高兴快乐太好了难过伤心哭失望生气愤怒讨厌烦真的是吗呢啊一个人去看电影"
WORDS = {"happy": ["开心", "高兴", "快乐", "太好了"], "sad": ["难过", "伤心", "哭", "失望"],
         "angry": ["生气", "愤怒", "讨厌", "烦"], "neutral": ["开会", "吃饭", "下午", "看电影"]}


def tiny_bert(path: Path) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizer

    torch.manual_seed(0)
    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(CHARS)) + list("<>[]/")
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizer(vocab_file=str(path / "vocab.txt")).save_pretrained(path)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(path)
    return path


def tiny_llama(path: Path) -> Path:
    """A causal LM with a char-level fast tokenizer that prepends BOS (as LLaMA/Vicuna's does)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import LlamaConfig, LlamaModel, PreTrainedTokenizerFast

    torch.manual_seed(0)
    vocab = {t: i for i, t in enumerate(["<unk>", "<s>", "</s>"] + sorted(set(CHARS)))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                            model_max_length=64).save_pretrained(path)
    LlamaModel(LlamaConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64)
               ).save_pretrained(path)
    return path


def _data(root: Path, texts: dict[str, str], name: str = "text_raw") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_text("".join(f"{u} {t}\n" if t else f"{u}\n" for u, t in sorted(texts.items())),
                             encoding="utf-8")
    return root


def _conf(tmp: Path, ckpt: Path, **extra) -> Path:
    conf = tmp / f"text_{ckpt.name}.yaml"
    conf.write_text(yaml.safe_dump({"modality": "text", "name": "hf_text", "ckpt": str(ckpt), **extra},
                                   allow_unicode=True), encoding="utf-8")
    return conf


def _stage2(cfg, data: Path, out: Path, nj: int = 1) -> dict:
    for j in range(1, nj + 1):
        run_job(cfg, data, out, nj=nj, job=j)
    return merge(cfg, data, out, nj=nj)


def _mats(out: Path, kind: str = "pooled_mean") -> dict[str, np.ndarray]:
    return {u: np.asarray(kaldiio.load_mat(v)) for u, v in read_table(out / f"{kind}.scp").items()}


TEXTS = {"a1": "今天下午我们开会", "a2": "很开心", "a3": "真的是吗", "a4": "我们一个人去看电影呢啊"}


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_tiny_model_from_one_yaml_special_tokens_out(tmp_path, family):
    ckpt = (tiny_bert if family == "bert" else tiny_llama)(tmp_path / family)
    data = _data(tmp_path / "data", TEXTS)
    conf = _conf(tmp_path, ckpt, frames={"layers": "all", "dtype": "float32"}, batch={"max_items": 8})
    assert upstream_main(["tag", str(conf), "--check_ckpt"]) == 0
    meta = _stage2(str(conf), data, tmp_path / "dump", nj=2)
    assert (meta["modality"], meta["schema_version"], meta["num_layers"], meta["dim"]) == ("text", 2, 3, 32)
    assert meta["time_axis"] == "tokens" and meta["input"].endswith("text_raw")
    # one frame per character: [CLS]/[SEP] or BOS are not in the time axis
    nf = {u: int(v) for u, v in read_table(tmp_path / "dump" / "utt2num_frames").items()}
    assert nf == {u: len(t) for u, t in TEXTS.items()}
    # the pooled mean is the mean of the model's hidden states over the text tokens alone
    from transformers import AutoModel, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(ckpt), AutoModel.from_pretrained(ckpt).eval()
    enc = tok(TEXTS["a4"], return_tensors="pt")
    with torch.inference_mode():
        hs = torch.stack(model(**enc, output_hidden_states=True).hidden_states)[:, 0]
    lo = 1
    ref = hs[:, lo:lo + len(TEXTS["a4"])].mean(dim=1).numpy()
    mean = _mats(tmp_path / "dump")["a4"]
    np.testing.assert_allclose(mean, ref, rtol=1e-4, atol=1e-5)
    frames = _mats(tmp_path / "dump", "frames")["a4"].reshape(len(TEXTS["a4"]), 3, 32)
    np.testing.assert_allclose(frames.mean(axis=0), mean, rtol=1e-4, atol=1e-5)
    # batched (padded) equals one transcript per forward
    single = _conf(tmp_path, ckpt, batch={"max_items": 1})
    _stage2(str(single), data, tmp_path / "dump1")
    for u, m in _mats(tmp_path / "dump1").items():
        np.testing.assert_allclose(_mats(tmp_path / "dump")[u], m, rtol=1e-4, atol=1e-5)


def test_token_windows_cover_each_token_once():
    for n, size, overlap in [(10, 20, 4), (50, 16, 4), (33, 10, 3), (17, 16, 8)]:
        wins = token_windows(n, size, overlap)
        kept = [i for s, e, k0, k1 in wins for i in range(k0, k1)]
        assert kept == list(range(n))
        assert all(e - s <= size and s <= k0 <= k1 <= e for s, e, k0, k1 in wins)


def test_long_transcript_windowed_or_truncated_and_empty_excluded(tmp_path, capsys):
    ckpt = tiny_bert(tmp_path / "bert")
    long = (CHARS * 2)[:40]
    data = _data(tmp_path / "data", {"b1": long, "b2": "很开心", "b3": ""})
    win = _conf(tmp_path, ckpt, max_length=16)
    meta = _stage2(str(win), data, tmp_path / "w")
    log = capsys.readouterr().err
    assert read_table(tmp_path / "w" / "utt2num_frames") == {"b1": "40", "b2": "3"}
    assert "1 windowed" in log and "0 truncated" in log
    excluded = read_table(tmp_path / "w" / "excluded")
    assert excluded == {"b3": f"{data / 'text_raw'}\tempty transcript"} and meta["num_excluded"] == 1
    assert "excluded: b3" in log
    trunc = tmp_path / "trunc.yaml"
    trunc.write_text(win.read_text() + "long_text: {policy: truncate}\n")
    meta = _stage2(str(trunc), data, tmp_path / "t")
    assert "1 truncated" in capsys.readouterr().err
    assert read_table(tmp_path / "t" / "utt2num_frames")["b1"] == "14"  # 16 minus [CLS] and [SEP]
    assert read_table(tmp_path / "t" / "truncated") == {"b1": "26"} and meta["num_truncated"] == 1
    with pytest.raises(RuntimeError, match=r"utterance b3 \(.*text_raw\): empty transcript"):
        run_job({**load_config(str(win)), "on_bad_input": "fail"}, data, tmp_path / "f")


def test_text_file_option_and_errors(tmp_path):
    ckpt = tiny_bert(tmp_path / "bert")
    data = _data(tmp_path / "data", TEXTS, name="text")
    with pytest.raises(FileNotFoundError, match="text_raw: not found"):
        run_job(str(_conf(tmp_path, ckpt)), data, tmp_path / "d")
    meta = _stage2(str(_conf(tmp_path, ckpt, text_file="text")), data, tmp_path / "d")
    assert meta["input"].endswith("/text")
    with pytest.raises(UpstreamError, match="float16 needs a CUDA device"):
        run_job(str(_conf(tmp_path, ckpt, text_file="text", dtype="float16")), data, tmp_path / "e")
    with pytest.raises(UpstreamError, match="text_file must be one of"):
        load_config({"modality": "text", "name": "char_ngram", "text_file": "words"})
    (ckpt / "vocab.txt").unlink()
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (ckpt / f).unlink(missing_ok=True)
    assert upstream_main(["tag", str(_conf(tmp_path, ckpt)), "--check_ckpt"]) == 1


def _labelled_texts(n: int, seed: int) -> tuple[dict[str, str], dict[str, str]]:
    rng = np.random.default_rng(seed)
    filler = list("我们今天真的是吗呢啊一个人去")
    texts, labels = {}, {}
    for i in range(n):
        lab = list(WORDS)[i % 4]
        words = [str(rng.choice(WORDS[lab])) for _ in range(rng.integers(1, 3))]
        parts = ["".join(rng.choice(filler, rng.integers(2, 6)))] + words + ["".join(rng.choice(filler, 3))]
        texts[f"s{seed}_{i:03d}"], labels[f"s{seed}_{i:03d}"] = "".join(parts), lab
    return texts, labels


def test_char_ngram_baseline_learns_and_is_the_same_in_every_job(tmp_path, monkeypatch):
    from sklearn.linear_model import LogisticRegression

    monkeypatch.chdir(tmp_path)  # the shipped config fits on data/train/text
    train, ytrain = _labelled_texts(80, 0)
    test, ytest = _labelled_texts(40, 1)
    _data(tmp_path / "data/train", train, name="text")
    _data(tmp_path / "data/test", test, name="text")
    conf = str(REPO / "conf/upstream/text_baseline.yaml")
    meta = _stage2(conf, Path("data/train"), Path("dump/train"), nj=1)
    assert meta["num_layers"] == 1 and meta["encoder"]["fit_utts"] == 80
    _stage2(conf, Path("data/test"), Path("dump/test"), nj=3)
    tr, te = _mats(Path("dump/train")), _mats(Path("dump/test"))
    clf = LogisticRegression(max_iter=2000).fit(np.stack([tr[u][0] for u in sorted(tr)]),
                                                [ytrain[u] for u in sorted(tr)])
    acc = clf.score(np.stack([te[u][0] for u in sorted(te)]), [ytest[u] for u in sorted(te)])
    assert acc >= 0.8, acc  # chance 0.25
    # 3 jobs fitted their transform separately: the same features as one job
    _stage2(conf, Path("data/test"), Path("dump/test1"), nj=1)
    for u, m in _mats(Path("dump/test1")).items():
        np.testing.assert_allclose(te[u], m, rtol=1e-5, atol=1e-6)
    done = json.loads(Path("dump/test/split3/done.1").read_text())
    assert len(done["encoder"]["fit_text_sha256"]) == 64
    # other training transcripts: the jobs are redone, not skipped
    _data(tmp_path / "data/train", dict(list(train.items())[:60]), name="text")
    again = run_job(conf, Path("data/test"), Path("dump/test"), nj=3, job=1)
    assert again["encoder"]["fit_utts"] == 60


def test_baseline_check_ckpt_needs_train_text(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    conf = str(REPO / "conf/upstream/text_baseline.yaml")
    assert upstream_main(["tag", conf, "--check_ckpt"]) == 1
    assert "data/train/text" in capsys.readouterr().err
    _data(tmp_path / "data/train", {"a": "很开心", "b": "难过"}, name="text")
    assert upstream_main(["tag", conf, "--check_ckpt"]) == 0
    assert upstream_main(["check", conf]) == 1
    assert "a text config" in capsys.readouterr().err


REMOTE_CONFIG = '''
from transformers import PretrainedConfig


class TinyRemoteConfig(PretrainedConfig):
    model_type = "tiny_remote_lm"

    def __init__(self, vocab_size=64, hidden_size=16, num_layers=2, **kw):
        self.vocab_size, self.hidden_size, self.num_layers = vocab_size, hidden_size, num_layers
        super().__init__(**kw)
'''
REMOTE_MODEL = '''
import torch
from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_tiny import TinyRemoteConfig


class TinyRemoteLM(PreTrainedModel):
    config_class = TinyRemoteConfig

    def __init__(self, config):
        super().__init__(config)
        self.emb = torch.nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = torch.nn.ModuleList(torch.nn.Linear(config.hidden_size, config.hidden_size)
                                          for _ in range(config.num_layers))
        self.head = torch.nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, output_hidden_states=False, **kw):
        h = self.emb(input_ids)
        hs = [h]
        for layer in self.layers:  # causal: a running mean of the previous positions
            n = torch.arange(1, h.shape[1] + 1, device=h.device).view(1, -1, 1)
            h = torch.tanh(layer(h.cumsum(dim=1) / n))
            hs.append(h)
        return CausalLMOutputWithPast(logits=self.head(h), hidden_states=tuple(hs))
'''


def test_remote_code_causal_lm_only_when_the_config_says_so(tmp_path):
    """A checkpoint whose code ships with it and registers only a causal-LM class (as Baichuan-7B's)."""
    ckpt = tiny_llama(tmp_path / "remote")
    for f in ckpt.glob("*.safetensors"):
        f.unlink()
    (ckpt / "configuration_tiny.py").write_text(REMOTE_CONFIG)
    (ckpt / "modeling_tiny.py").write_text(REMOTE_MODEL)
    import importlib.util
    import sys

    sys.path.insert(0, str(ckpt.parent))
    try:
        spec = importlib.util.spec_from_file_location("remote.configuration_tiny", ckpt / "configuration_tiny.py")
        cfg_mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(cfg_mod)
        sys.modules["remote.configuration_tiny"] = cfg_mod
        spec = importlib.util.spec_from_file_location("remote.modeling_tiny", ckpt / "modeling_tiny.py")
        model_mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(model_mod)
    finally:
        sys.path.remove(str(ckpt.parent))
        sys.modules.pop("remote.configuration_tiny", None)
    torch.manual_seed(0)
    model_mod.TinyRemoteLM(cfg_mod.TinyRemoteConfig(vocab_size=64)).save_pretrained(ckpt)
    conf = json.loads((ckpt / "config.json").read_text())
    conf["auto_map"] = {"AutoConfig": "configuration_tiny.TinyRemoteConfig",
                        "AutoModelForCausalLM": "modeling_tiny.TinyRemoteLM"}
    (ckpt / "config.json").write_text(json.dumps(conf))
    data = _data(tmp_path / "data", TEXTS)
    with pytest.raises(Exception, match="trust_remote_code"):
        run_job(str(_conf(tmp_path, ckpt)), data, tmp_path / "no")
    meta = _stage2(str(_conf(tmp_path, ckpt, trust_remote_code=True)), data, tmp_path / "yes")
    assert (meta["num_layers"], meta["dim"]) == (3, 16)
    assert meta["encoder"]["model_class"] == "TinyRemoteLM"
    nf = {u: int(v) for u, v in read_table(tmp_path / "yes" / "utt2num_frames").items()}
    assert nf == {u: len(t) for u, t in TEXTS.items()}


def test_args_naming_config_attributes_reach_the_config(tmp_path):
    """``args`` go to the model's from_pretrained: one naming a config attribute overrides it there."""
    from etser.features.text_encoders import HFTextEncoder

    ckpt = tiny_bert(tmp_path / "bert")
    cfg = load_config(_conf(tmp_path, ckpt, args={"hidden_dropout_prob": 0.0, "layer_norm_eps": 1e-3}))
    enc = HFTextEncoder(cfg)
    assert enc.model.config.hidden_dropout_prob == 0.0 and enc.model.config.layer_norm_eps == 1e-3
