"""The caption metrics (conf/caption/metrics.yaml): BLEU-4, ROUGE-L, METEOR, CIDEr-D, SPICE/SPIDEr, FENSE,
BERTScore, CLAPScore.

- Lexical metrics run through ``pycocoevalcap`` on tokens cut by one option, ``tokenization``: ``char``
  (one token per Chinese character, Latin words whole), ``jieba`` (words), ``ptb`` (coco-caption's PTB
  tokenizer on the raw text, as aac-metrics does: it leaves unsegmented Chinese whole), ``whitespace`` (split
  on spaces) or ``auto`` (the default: ``char`` when any caption is Chinese, else ``ptb``).  What was used is
  recorded with the scores (``notes.segmentation``), beside the option itself.
- ``references``: how many references per utterance are scored against (``all``, or the first N of each);
  ``clap.variant``: ``audio-text`` (caption vs the utterance's audio) or ``text-text`` (caption vs its
  references with CLAP's text tower, as aac-metrics' CLAP-sim).  Both are recorded in the notes.
- METEOR (and SPICE) need Java; without it they are blank (None) with one message, the others still run.
- SPICE needs Stanford CoreNLP 3.6.0 (``stanford-corenlp-3.6.0.jar`` and ``-models.jar`` in
  ``spice_corenlp_dir``); pycocoevalcap's own downloader is never called.  SPIDEr = (CIDEr-D + SPICE) / 2.
- FENSE, BERTScore, CLAPScore need local model dirs; absent -> blank and one message.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import json
import unicodedata
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from etser.caption.text import segment, metric_unit
from etser.yamlfile import read_mapping

LOG = logging.getLogger("etser.caption.metrics")
ALL_METRICS = ("bleu4", "rouge_l", "meteor", "cider_d", "spider", "fense", "bertscore", "clapscore")
TABLE_COLUMNS = {"bleu4": "BLEU-4", "rouge_l": "ROUGE-L", "meteor": "METEOR", "spider": "SPIDEr",
                 "fense": "FENSE", "bertscore": "BERTScore", "clapscore": "CLAPScore", "cider_d": "CIDEr-D"}
TOKENIZATIONS = ("auto", "char", "jieba", "ptb", "whitespace")
CLAP_VARIANTS = ("audio-text", "text-text")
DEFAULTS = {
    "metrics": list(ALL_METRICS),
    "tokenization": "auto",      # auto | char | jieba | ptb | whitespace: tokens of every lexical metric
    "references": "all",         # all | N: references per utterance (the first N of each)
    "java": "java",
    "spice_corenlp_dir": None,   # dir with stanford-corenlp-3.6.0.jar and stanford-corenlp-3.6.0-models.jar
    "bertscore": {"model_dir": None, "layer": None, "batch_size": 32},
    "fense": {"sbert_dir": None, "echecker_dir": None, "error_threshold": 0.9, "penalty": 0.9},
    "clap": {"model_dir": None, "batch_size": 8, "variant": "audio-text"},
}
# options this module once had: a config naming them is refused with the option that replaced them
RENAMED = {"segment_zh": "tokenization (char | jieba | ptb | whitespace | auto; segment_zh: char is "
                         "tokenization: char, segment_zh: jieba is tokenization: jieba)",
           "ptb_tokenizer": "tokenization (ptb_tokenizer: true is tokenization: ptb, or auto for PTB on English "
                            "only; false is tokenization: char or whitespace)"}


def load_metrics_config(path: Path | None) -> dict:
    conf = json.loads(json.dumps(DEFAULTS))
    if path is not None:
        loaded = read_mapping(path, DEFAULTS, "option", RENAMED)
        for k, v in loaded.items():
            conf[k] = {**conf[k], **v} if isinstance(conf[k], dict) and isinstance(v, dict) else v
    bad = [m for m in conf["metrics"] if m not in ALL_METRICS]
    if bad:
        raise ValueError(f"{path}: unknown metric(s) {bad}; known: {', '.join(ALL_METRICS)}")
    if conf["tokenization"] not in TOKENIZATIONS:
        raise ValueError(f"{path}: tokenization must be one of {', '.join(TOKENIZATIONS)}, "
                         f"got {conf['tokenization']!r}")
    try:
        used_references([], conf["references"])
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    if conf["clap"].get("variant") not in CLAP_VARIANTS:
        raise ValueError(f"{path}: clap.variant must be one of {', '.join(CLAP_VARIANTS)}, "
                         f"got {conf['clap'].get('variant')!r}")
    return conf


def java_ok(java: str = "java") -> bool:
    return shutil.which(java) is not None


# ---------------------------------------------------------------- lexical

def _whitespace(text: str) -> list[str]:
    """Space-separated pieces (NFKC, lowercased) without the punctuation at their ends."""
    out = []
    for piece in unicodedata.normalize("NFKC", text).lower().split():
        chars = list(piece)
        while chars and unicodedata.category(chars[-1]).startswith("P"):
            chars.pop()
        while chars and unicodedata.category(chars[0]).startswith("P"):
            chars.pop(0)
        if chars:
            out.append("".join(chars))
    return out


def tokenize(hyps: Sequence[str], refs: Sequence[Sequence[str]], conf: dict, log: Callable = LOG.warning
             ) -> tuple[dict, dict, str]:
    """pycocoevalcap inputs {i: [tokenized text]} for hypotheses and references, and the tokenization used
    (``char``, ``jieba``, ``ptb``, ``whitespace``, or ``word``: ``auto`` on English without PTB)."""
    if "segment_zh" in conf:
        raise ValueError(f"segment_zh was replaced by {RENAMED['segment_zh']}")
    option = conf.get("tokenization", "auto")
    if option == "auto":
        # Chinese never goes through PTB under auto: PTB keeps an unsegmented sentence as one token.
        # ``ptb_tokenizer: False`` (set in code, never in a config) is checkpoint selection's Java-free path.
        unit = metric_unit(list(hyps) + [r for rs in refs for r in rs], "char")
        if unit == "word" and conf.get("ptb_tokenizer", True):
            unit = "ptb"
    elif option in TOKENIZATIONS:
        unit = option
    else:
        raise ValueError(f"tokenization must be one of {', '.join(TOKENIZATIONS)}, got {option!r}")
    if unit == "ptb":
        if java_ok(conf["java"]):
            from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
            ptb = PTBTokenizer()
            res = ptb.tokenize({i: [{"caption": h}] for i, h in enumerate(hyps)})
            gts = ptb.tokenize({i: [{"caption": r} for r in rs] for i, rs in enumerate(refs)})
            return res, gts, "ptb"
        unit = "word" if option == "auto" else "whitespace"
        log(f"{conf['java']} not found: captions split by {unit} without the PTB tokenizer")
    cut = _whitespace if unit == "whitespace" else (lambda t: segment(t, unit))
    res = {i: [" ".join(cut(h))] for i, h in enumerate(hyps)}
    gts = {i: [" ".join(cut(r)) for r in rs] for i, rs in enumerate(refs)}
    return res, gts, unit


_METEOR: list = []


def shared_meteor():
    """One METEOR Java process per Python process (it takes ~35 s to start and load its paraphrase table), reused
    by every scoring of a job; pycocoevalcap's Meteor ends it when the object is collected at exit."""
    if not _METEOR:
        from pycocoevalcap.meteor.meteor import Meteor
        _METEOR.append(Meteor())
    return _METEOR[0]


def _spice(res: dict, gts: dict, conf: dict) -> tuple[float, list[float]]:
    import pycocoevalcap.spice as spice_pkg
    pkg = Path(spice_pkg.__file__).parent
    core = Path(conf["spice_corenlp_dir"])
    jars = [core / "stanford-corenlp-3.6.0.jar", core / "stanford-corenlp-3.6.0-models.jar"]
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = Path(tmp) / "in.json", Path(tmp) / "out.json"
        inp.write_text(json.dumps([{"image_id": i, "test": res[i][0], "refs": gts[i]} for i in sorted(res)]))
        cp = os.pathsep.join([str(pkg / "spice-1.0.jar"), str(pkg / "lib" / "*"), *map(str, jars)])
        cmd = [conf["java"], "-Xmx8G", "-cp", cp, "edu.anu.spice.SpiceScorer", str(inp), "-out", str(out),
               "-subset", "-silent"]
        subprocess.run(cmd, check=True, capture_output=True)
        scores = [float(r["scores"]["All"]["f"]) for r in sorted(json.loads(out.read_text()),
                                                                  key=lambda r: r["image_id"])]
    return float(np.mean(scores)), scores


def lexical_scores(hyps, refs, conf, log: Callable = LOG.warning) -> tuple[dict, dict, dict]:
    """(corpus scores, per-utterance scores, notes) for the lexical metrics asked for."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    want = set(conf["metrics"])
    res, gts, unit = tokenize(hyps, refs, conf, log)
    notes = {"segmentation": unit}
    scores, per = {}, {}
    bleu, bleu_per = Bleu(4).compute_score(gts, res, verbose=0)
    for n in range(4):
        scores[f"bleu{n + 1}"] = float(bleu[n])
    per["bleu4"] = [float(x) for x in bleu_per[3]]
    r, r_per = Rouge().compute_score(gts, res)
    scores["rouge_l"], per["rouge_l"] = float(r), [float(x) for x in r_per]
    c, c_per = Cider().compute_score(gts, res)
    scores["cider_d"], per["cider_d"] = float(c), [float(x) for x in c_per]
    java = java_ok(conf["java"])
    if "meteor" in want:
        if java:
            mv, m_per = shared_meteor().compute_score(gts, res)
            scores["meteor"], per["meteor"] = float(mv), [float(x) for x in m_per]
        else:
            scores["meteor"] = None
            notes["meteor"] = f"METEOR needs Java ({conf['java']} not found)"
    if "spider" in want:
        scores["spice"] = scores["spider"] = None
        if not java:
            notes["spider"] = f"SPICE/SPIDEr need Java ({conf['java']} not found)"
        elif not conf.get("spice_corenlp_dir") or not all(
                (Path(conf["spice_corenlp_dir"]) / j).is_file()
                for j in ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")):
            notes["spider"] = ("SPICE/SPIDEr need Stanford CoreNLP 3.6.0: set spice_corenlp_dir in "
                               "conf/caption/metrics.yaml to a dir with stanford-corenlp-3.6.0.jar and "
                               "stanford-corenlp-3.6.0-models.jar (stanford-corenlp-full-2015-12-09.zip)")
        else:
            s, s_per = _spice(res, gts, conf)
            scores["spice"], scores["spider"] = s, (scores["cider_d"] + s) / 2
            per["spider"] = [(a + b) / 2 for a, b in zip(per["cider_d"], s_per)]
    return scores, per, notes


# ---------------------------------------------------------------- model-based

def _missing_dir(d) -> bool:
    return not d or not (Path(d) / "config.json").is_file()


def _embed_tokens(model, tok, texts: Sequence[str], layer, device, batch_size=32):
    """Per text: (n_tokens, H) contextual embeddings without the special tokens, L2-normalised."""
    import torch
    out = []
    for s in range(0, len(texts), batch_size):
        enc = tok(list(texts[s:s + batch_size]), return_tensors="pt", padding=True, truncation=True,
                  return_special_tokens_mask=True)
        special = enc.pop("special_tokens_mask")
        with torch.no_grad():
            hs = model(**{k: v.to(device) for k, v in enc.items()}, output_hidden_states=True).hidden_states
        h = hs[-1 if layer is None else int(layer)].float().cpu()
        h = torch.nn.functional.normalize(h, dim=-1)
        for i in range(h.shape[0]):
            keep = (enc["attention_mask"][i] == 1) & (special[i] == 0)
            out.append(h[i][keep])
    return out


def bertscore(hyps, refs, model_dir, layer=None, batch_size=32, device="cpu") -> tuple[dict, list[float]]:
    """BERTScore without idf or baseline rescaling (Zhang et al. 2020): greedy cosine matching; for several
    references, the reference with the highest F1 counts (as bert-score does)."""
    import torch
    from transformers import AutoModel, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir)).to(device).eval()
    flat = [r for rs in refs for r in rs]
    eh = _embed_tokens(model, tok, hyps, layer, device, batch_size)
    er = _embed_tokens(model, tok, flat, layer, device, batch_size)
    P, R, F1, k = [], [], [], 0
    for i, rs in enumerate(refs):
        best = (0.0, 0.0, 0.0)
        for _ in rs:
            h, r = eh[i], er[k]
            k += 1
            if len(h) == 0 or len(r) == 0:
                continue
            sim = h @ r.T
            p, rc = sim.max(1).values.mean().item(), sim.max(0).values.mean().item()
            f = 2 * p * rc / (p + rc) if p + rc > 0 else 0.0
            if f > best[2]:
                best = (p, rc, f)
        P.append(best[0]), R.append(best[1]), F1.append(best[2])
    del torch
    return {"bertscore": float(np.mean(F1)), "bertscore_p": float(np.mean(P)), "bertscore_r": float(np.mean(R))}, F1


def _sbert(model_dir, texts, device="cpu", batch_size=32):
    """Sentence-BERT embeddings: mean of the last layer over real tokens, L2-normalised."""
    import torch
    from transformers import AutoModel, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir)).to(device).eval()
    out = []
    for s in range(0, len(texts), batch_size):
        enc = tok(list(texts[s:s + batch_size]), return_tensors="pt", padding=True, truncation=True).to(device)
        with torch.no_grad():
            h = model(**enc).last_hidden_state.float()
        m = enc["attention_mask"][..., None].float()
        out.append(torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1), dim=-1).cpu())
    return torch.cat(out)


def error_probs(echecker_dir, texts, device="cpu", batch_size=32) -> np.ndarray:
    """Probability that each caption is disfluent: the sigmoid of the ``error`` label of a multi-label
    sequence classifier (FENSE's error detector), else of its highest label."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(echecker_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(echecker_dir)).to(device).eval()
    labels = {v: int(k) for k, v in model.config.id2label.items()}
    out = []
    for s in range(0, len(texts), batch_size):
        enc = tok(list(texts[s:s + batch_size]), return_tensors="pt", padding=True, truncation=True).to(device)
        with torch.no_grad():
            p = torch.sigmoid(model(**enc).logits.float()).cpu()
        out.append(p[:, labels["error"]] if "error" in labels else p.max(1).values)
    return torch.cat(out).numpy()


def fense(hyps, refs, sbert_dir, echecker_dir, error_threshold=0.9, penalty=0.9, device="cpu"
          ) -> tuple[dict, list[float]]:
    """FENSE (Zhou et al. 2022): mean Sentence-BERT cosine to the references, times (1 - penalty) when the
    error detector's probability exceeds ``error_threshold``."""
    flat = [r for rs in refs for r in rs]
    eh, er = _sbert(sbert_dir, list(hyps), device), _sbert(sbert_dir, flat, device)
    err = error_probs(echecker_dir, list(hyps), device)
    per, k = [], 0
    for i, rs in enumerate(refs):
        sim = float((er[k:k + len(rs)] @ eh[i]).mean())
        k += len(rs)
        per.append(sim * (1 - penalty) if err[i] > error_threshold else sim)
    return {"fense": float(np.mean(per))}, per


def _clap_text(model, proc, texts: Sequence[str], batch_size: int, device):
    """CLAP text-tower embeddings (projected), one row per text."""
    import torch
    out = []
    for s in range(0, len(texts), batch_size):
        t = proc.tokenizer(list(texts[s:s + batch_size]), return_tensors="pt", padding=True).to(device)
        with torch.no_grad():
            te = model.get_text_features(**t)
        out.append(getattr(te, "pooler_output", te).float().cpu())
    return torch.cat(out)


def clapscore(hyps, model_dir, variant="audio-text", wavs=None, refs=None, batch_size=8, device="cpu"
              ) -> tuple[dict, list[float]]:
    """CLAPScore of each hypothesis: ``audio-text``, the cosine between the CLAP audio embedding of the
    utterance and the CLAP text embedding of the hypothesis; ``text-text``, the mean cosine between the text
    embeddings of the hypothesis and of each of its references (aac-metrics' CLAP-sim, method "text")."""
    import torch
    from transformers import ClapModel, ClapProcessor
    proc = ClapProcessor.from_pretrained(str(model_dir))
    model = ClapModel.from_pretrained(str(model_dir)).to(device).eval()
    cos = torch.nn.functional.cosine_similarity
    eh = _clap_text(model, proc, hyps, batch_size, device)
    per = []
    if variant == "text-text":
        er = _clap_text(model, proc, [r for rs in refs for r in rs], batch_size, device)
        k = 0
        for i, rs in enumerate(refs):
            per.append(float(cos(eh[i:i + 1], er[k:k + len(rs)], dim=-1).mean()))
            k += len(rs)
        return {"clapscore": float(np.mean(per))}, per
    if variant != "audio-text":
        raise ValueError(f"clap.variant must be one of {', '.join(CLAP_VARIANTS)}, got {variant!r}")
    from etser.features.audio import load_audio
    rate = int(proc.feature_extractor.sampling_rate)
    # the feature extractor crops audio longer than max_length_s at a random place (np.random): fix it
    np_state = np.random.get_state()
    np.random.seed(0)
    for s in range(0, len(hyps), batch_size):
        audio = [load_audio(p, rate=rate) for p in wavs[s:s + batch_size]]
        a = proc.feature_extractor(audio, sampling_rate=rate, return_tensors="pt").to(device)
        with torch.no_grad():
            ae = model.get_audio_features(**a)
        ae = getattr(ae, "pooler_output", ae).float().cpu()
        per += cos(ae, eh[s:s + batch_size], dim=-1).tolist()
    np.random.set_state(np_state)
    return {"clapscore": float(np.mean(per))}, per


def used_references(refs: Sequence[Sequence[str]], option) -> list[list[str]]:
    """The references scored against: all of each utterance's, or its first N (``references`` option)."""
    if option != "all" and (isinstance(option, bool) or not isinstance(option, int) or option < 1):
        raise ValueError(f"references must be 'all' or a number >= 1, got {option!r}")
    return [list(rs) if option == "all" else list(rs)[:option] for rs in refs]


def score_captions(hyps: Sequence[str], refs: Sequence[Sequence[str]], conf: dict, wavs: Sequence[str] | None = None,
                   device: str = "cpu", log: Callable = LOG.warning) -> dict:
    """All configured metrics: ``{"scores": {...}, "per_utt": {...}, "notes": {...}}``; a metric that cannot run
    is None in ``scores`` with its reason in ``notes`` (logged once)."""
    if len(hyps) != len(refs) or not hyps:
        raise ValueError(f"{len(hyps)} hypotheses for {len(refs)} reference sets")
    empty = [i for i, rs in enumerate(refs) if not rs]
    if empty:
        raise ValueError(f"{len(empty)} hypotheses have no reference (first: number {empty[0]})")
    want = set(conf["metrics"])
    refs = used_references(refs, conf.get("references", "all"))
    counts = [len(rs) for rs in refs]
    scores, per, notes = lexical_scores(hyps, refs, conf, log)
    # the settings every figure depends on, printed under the caption tables
    notes.update(tokenization=conf.get("tokenization", "auto"), references=conf.get("references", "all"),
                 references_per_utt=[min(counts), max(counts)], references_mean=float(np.mean(counts)))
    if "clapscore" in want:
        notes["clapscore_variant"] = conf["clap"].get("variant", "audio-text")
    if "bertscore" in want:
        c = conf["bertscore"]
        if _missing_dir(c.get("model_dir")):
            scores["bertscore"] = None
            notes["bertscore"] = ("BERTScore needs a BERT: set bertscore.model_dir in conf/caption/metrics.yaml "
                                  f"(a local HF dir; now {c.get('model_dir')!r})")
        else:
            s, p = bertscore(hyps, refs, c["model_dir"], c.get("layer"), int(c.get("batch_size", 32)), device)
            scores.update(s), per.update(bertscore=p)
            notes["bertscore"] = f"model {c['model_dir']}, layer {c.get('layer') or 'last'}, no idf, no rescaling"
    if "fense" in want:
        c = conf["fense"]
        if _missing_dir(c.get("sbert_dir")) or _missing_dir(c.get("echecker_dir")):
            scores["fense"] = None
            notes["fense"] = ("FENSE needs a Sentence-BERT and an error detector: set fense.sbert_dir and "
                              "fense.echecker_dir in conf/caption/metrics.yaml (local HF dirs; now "
                              f"{c.get('sbert_dir')!r}, {c.get('echecker_dir')!r})")
        else:
            s, p = fense(hyps, refs, c["sbert_dir"], c["echecker_dir"], float(c["error_threshold"]),
                         float(c["penalty"]), device)
            scores["fense"], per["fense"] = s["fense"], p
    if "clapscore" in want:
        c = conf["clap"]
        variant = c.get("variant", "audio-text")
        if _missing_dir(c.get("model_dir")):
            scores["clapscore"] = None
            notes["clapscore"] = ("CLAPScore needs a CLAP model: set clap.model_dir in conf/caption/metrics.yaml "
                                  f"(a local HF dir; now {c.get('model_dir')!r})")
        elif wavs is None and variant == "audio-text":
            scores["clapscore"] = None
            notes["clapscore"] = ("CLAPScore (audio-text) needs the audio: wav.scp of the set was not found "
                                  "(clap.variant: text-text needs none)")
        else:
            s, p = clapscore(hyps, c["model_dir"], variant, wavs, refs, int(c.get("batch_size", 8)), device)
            scores.update(s), per.update(clapscore=p)
    for k, v in notes.items():
        if scores.get(k, 0) is None:
            log(v)
    return {"scores": scores, "per_utt": per, "notes": notes}
