"""etser.provenance: identities of stage inputs and the words for what changed."""

from __future__ import annotations

import os

import pytest

from etser import provenance as prov


def _table(tmp_path, n=3):
    paths = {}
    for i in range(n):
        p = tmp_path / f"u{i}.wav"
        p.write_bytes(b"x" * (10 + i))
        paths[f"u{i}"] = str(p)
    return paths


def test_unchanged_inputs_are_up_to_date(tmp_path):
    t = _table(tmp_path)
    a = {"features": prov.table_identity(t, files=True), "config": "abc"}
    b = {"features": prov.table_identity(t, files=True), "config": "abc"}
    assert prov.check("dump/x/train", a, b) == []


def test_each_kind_of_change_is_named(tmp_path):
    t = _table(tmp_path)
    base = {"wav": prov.table_identity(t, files=True), "config": "abc"}
    # a file replaced in place: same path, other size
    with open(t["u1"], "ab") as f:
        f.write(b"more")
    changed = prov.check("feats", base, {"wav": prov.table_identity(t, files=True), "config": "abc"})
    assert changed == ["wav: files changed in place (size or modification time)"]
    # the same size but a new modification time also counts
    (tmp_path / "b").mkdir()
    t2 = _table(tmp_path / "b")
    before = prov.table_identity(t2, files=True)
    st = os.stat(t2["u0"])
    os.utime(t2["u0"], ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    assert prov.describe_changes({"w": before}, {"w": prov.table_identity(t2, files=True)}) == [
        "w: files changed in place (size or modification time)"]
    # a path changed
    moved = dict(t, u2=t["u2"] + ".moved")
    assert "values changed" in prov.check("feats", base, {"wav": prov.table_identity(moved, files=True),
                                                         "config": "abc"})[0]
    # an utterance added or removed
    fewer = {k: v for k, v in t.items() if k != "u0"}
    msg = prov.check("feats", base, {"wav": prov.table_identity(fewer, files=True), "config": "abc"})
    assert msg == ["wav: the utterances changed (added or removed; 3 -> 2 entries)"]
    # a config edited
    assert prov.check("feats", base, {"wav": base["wav"], "config": "abd"}) == ["config: changed (abc -> abd)"]


def test_label_correction_changes_content_identity(tmp_path):
    f = tmp_path / "utt2emo_audio"
    f.write_text("a happy\nb sad\n")
    before = prov.content_identity(f)
    f.write_text("a happy\nb angry\n")
    assert prov.content_identity(f) != before


def test_refuse_names_what_and_every_change(tmp_path):
    with pytest.raises(prov.StaleError, match=r"exp/x is out of date: config: changed \(a -> b\); labels: changed \(1 -> 2\)"):
        prov.check("exp/x", {"labels": "1", "config": "a"}, {"labels": "2", "config": "b"}, on_change="refuse")
    with pytest.raises(ValueError, match="on_change"):
        prov.check("x", {}, {}, on_change="maybe")


def test_missing_or_broken_record_is_never_trusted(tmp_path):
    assert prov.read(tmp_path / "absent.json") is None
    (tmp_path / "broken.json").write_text("{half")
    assert prov.read(tmp_path / "broken.json") is None
    assert prov.check("x", None, {"a": "1"}) == [
        "no record of what it was made from (made by an older version, or interrupted)"]


def test_write_is_atomic_and_round_trips(tmp_path):
    ident = {"b": {"keys": "k", "entries": "2"}, "a": "1"}
    prov.write(tmp_path / prov.FILE_NAME, ident)
    assert prov.read(tmp_path / prov.FILE_NAME) == ident
    assert not list(tmp_path.glob("*.tmp"))


def test_missing_file_has_an_identity(tmp_path):
    assert prov.file_identity(tmp_path / "nope.wav") == "missing"
    t = {"u": str(tmp_path / "nope.wav")}
    assert prov.table_identity(t, files=True)["files"] != prov.table_identity({"u": str(tmp_path)}, files=True)["files"]
