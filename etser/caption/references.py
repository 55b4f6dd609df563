"""The reference captions of each scored utterance.

``data/<set>/utt2caption_<kind>`` (stage 1) holds one caption per utterance: the one a decoder is trained on.
A data dir may also hold ``utt2captions_<kind>``: utt -> a JSON array of all of that utterance's references
of that kind (several annotators, several wordings), in order, the first being its ``utt2caption_<kind>``
caption; one line per utterance, so the file stays a Kaldi table (unique sorted keys; ``conf/data_tables``).
Scoring reads it when present; without it each utterance has its one caption as the only reference.  How many
of them the metrics use is the metrics config's ``references`` option (etser.caption.metrics).
"""

from __future__ import annotations

import json
from pathlib import Path

from etser.caption.data import CaptionSet, caption_file, task_of
from etser.caption.text import segment
from etser.datadir import read_table


def references_file(data_set_dir: Path, task) -> Path:
    """``utt2captions_<kind>`` beside the caption task's label file (``task``: a caption task or its kind)."""
    task = task_of(task)
    return caption_file(data_set_dir, task).with_name(f"utt2captions_{task.caption_kind}")


def read_references(data_set_dir: Path, task, cs: CaptionSet) -> list[list[str]]:
    """Per utterance of ``cs`` (read by ``data.read_captions``), its references: those of
    ``utt2captions_<kind>`` when the file exists, else ``[its caption]``.  A scored utterance missing from the
    file, a value that is not a JSON array of strings, a reference without words, or a first reference that
    is not the utterance's ``utt2caption_<kind>`` caption (one of the two files is stale) is an error naming
    the file and the utterance."""
    task = task_of(task)
    kind = task.caption_kind
    path = references_file(data_set_dir, task)
    if not path.is_file():
        return [[c] for c in cs.captions]
    table = read_table(path)
    out = []
    for utt, caption in zip(cs.utts, cs.captions):
        if utt not in table:
            raise ValueError(f"{path}: utterance {utt} has a {kind} caption in {caption_file(data_set_dir, task).name} "
                             "but no references here; add its line or remove the file")
        try:
            refs = json.loads(table[utt])
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: utterance {utt}: not JSON ({e.msg}); expected an array of captions") from None
        if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
            raise ValueError(f"{path}: utterance {utt}: expected a non-empty JSON array of caption strings, "
                             f"got {table[utt][:80]}")
        refs = [r.strip() for r in refs]
        bad = [r for r in refs if not segment(r, "char")]
        if bad:
            raise ValueError(f"{path}: utterance {utt}: reference {bad[0]!r} has no word (empty or punctuation "
                             "only); remove it")
        if refs[0] != caption:
            raise ValueError(f"{path}: utterance {utt}: the first reference {refs[0]!r} is not its "
                             f"{caption_file(data_set_dir, task).name} caption {caption!r}; one of the two is stale")
        out.append(refs)
    return out

