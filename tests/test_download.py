"""local/download.py against a local stand-in for the Hugging Face Hub: never the network.

The Hub functions the module calls (HfApi.get_paths_info, hf_hub_download, snapshot_download) are replaced by
fakes serving files from a tmp folder, with the real huggingface_hub exception classes for gated and offline cases.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import sys
import tarfile
from pathlib import Path

import httpx2
import pytest
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError
from huggingface_hub.hf_api import RepoFile

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("download_cli", ROOT / "local" / "download.py")
download = importlib.util.module_from_spec(_spec)
sys.modules["download_cli"] = download  # dataclasses look their module up there
_spec.loader.exec_module(download)

TARS = ("Audio.tar", "Text.tar", "Video.tar", "Multimodal.tar")


def make_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


class FakeHub:
    """Files of Hub repos in a folder: ``<root>/<repo>/<file>``; counts each download."""

    def __init__(self, root: Path):
        self.root, self.downloads, self.error = root, [], None
        self.recorded: dict[tuple[str, str], tuple[int, str]] = {}  # what the Hub's LFS pointer says, if not the file

    def add(self, repo: str, name: str, data: bytes | Path) -> Path:
        dst = self.root / repo / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(data.read_bytes() if isinstance(data, Path) else data)
        return dst

    def _raise(self):
        if self.error is not None:
            raise self.error

    def get_paths_info(self, repo_id, paths, *, repo_type=None, revision=None, **kw):
        self._raise()
        out = []
        for p in paths:
            f = self.root / repo_id / p
            if f.is_file():
                size, sha = self.recorded.get((repo_id, p), (f.stat().st_size,
                                                             hashlib.sha256(f.read_bytes()).hexdigest()))
                out.append(RepoFile(path=p, size=size, oid="0" * 40, lfs={"size": size, "oid": sha,
                                                                        "pointerSize": 134}))
        return out

    def hf_hub_download(self, repo_id, filename, *, local_dir, repo_type=None, revision=None, **kw):
        self._raise()
        self.downloads.append((repo_id, filename))
        dst = Path(local_dir) / filename
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes((self.root / repo_id / filename).read_bytes())
        return str(dst)

    def snapshot_download(self, repo_id, *, local_dir, revision=None, **kw):
        self._raise()
        self.downloads.append((repo_id, "*"))
        for f in (self.root / repo_id).rglob("*"):
            if f.is_file():
                dst = Path(local_dir) / f.relative_to(self.root / repo_id)
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_bytes(f.read_bytes())
        return str(local_dir)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    fake = FakeHub(tmp_path / "hub")
    monkeypatch.setattr(download, "HfApi", lambda: fake)
    monkeypatch.setattr(download, "hf_hub_download", fake.hf_hub_download)
    monkeypatch.setattr(download, "snapshot_download", fake.snapshot_download)
    return fake


def release_tars(hub: FakeHub, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for t in TARS:
        mod = t[:-4]
        hub.add(download.REPO_ID, t, make_tar(src / t, {f"{mod}/G00001/{mod.lower()}.txt": mod.encode()}))


def test_tars_are_verified_extracted_and_not_fetched_again(hub, tmp_path):
    release_tars(hub, tmp_path)
    db = tmp_path / "EmotionTalk"
    got = download.fetch_corpus(db, log=lambda *a: None)
    assert got == list(TARS) and [f for _, f in hub.downloads] == list(TARS)
    assert (db / "Audio" / "G00001" / "audio.txt").read_bytes() == b"Audio"
    assert (db / "Multimodal" / "G00001" / "multimodal.txt").read_bytes() == b"Multimodal"
    assert (tmp_path / "EmotionTalk_tars" / "Audio.tar").is_file()  # the default archive folder, beside db_root
    hub.downloads.clear()
    hub.error = httpx2.ConnectError("no network")  # a rerun must not even ask the Hub
    assert download.fetch_corpus(db, log=lambda *a: None) == [] and hub.downloads == []


def test_wrong_size_or_sha256_is_refused_naming_the_file_and_not_extracted(hub, tmp_path):
    release_tars(hub, tmp_path)
    hub.recorded[(download.REPO_ID, "Text.tar")] = (123, "0" * 64)
    with pytest.raises(download.DownloadError, match=r"Text\.tar: \d+ bytes, expected 123"):
        download.fetch_corpus(tmp_path / "db", ["Text.tar"], log=lambda *a: None)
    size = (hub.root / download.REPO_ID / "Text.tar").stat().st_size
    hub.recorded[(download.REPO_ID, "Text.tar")] = (size, "0" * 64)
    with pytest.raises(download.DownloadError, match=r"Text\.tar: SHA-256 [0-9a-f]{64}, expected 0{64}"):
        download.fetch_corpus(tmp_path / "db", ["Text.tar"], log=lambda *a: None)
    assert not (tmp_path / "db" / "Text").exists() and not download.done(tmp_path / "db", "Text.tar",
                                                                             download.read_table())


def test_published_value_in_the_table_must_equal_the_hubs(hub, tmp_path):
    release_tars(hub, tmp_path)
    table = tmp_path / "table.tsv"
    table.write_text("Audio.tar\t-\t" + "a" * 64 + "\n", encoding="utf-8")
    with pytest.raises(download.DownloadError, match=r"Audio\.tar: the Hub records SHA-256 [0-9a-f]{64} but .* "
                                                     r"says a{64}"):
        download.fetch_corpus(tmp_path / "db", table_path=table, log=lambda *a: None)
    assert hub.downloads == []


def test_a_tar_with_a_member_outside_db_root_is_refused_before_anything_is_written(hub, tmp_path):
    hub.add(download.REPO_ID, "Audio.tar", make_tar(tmp_path / "evil.tar", {"Audio/ok.txt": b"ok",
                                                                            "../escaped.txt": b"x"}))
    db = tmp_path / "db"
    with pytest.raises(download.DownloadError, match=r"Audio\.tar: member '\.\./escaped\.txt' refused"):
        download.fetch_corpus(db, ["Audio.tar"], log=lambda *a: None)
    assert not (tmp_path / "escaped.txt").exists() and not (db / "Audio").exists()


def test_gated_dataset_says_accept_the_licence_and_log_in(hub, tmp_path):
    hub.error = GatedRepoError("403 gated", response=httpx2.Response(403, request=httpx2.Request("GET", "https://x")))
    with pytest.raises(download.DownloadError) as e:
        download.fetch_corpus(tmp_path / "db", log=lambda *a: None)
    msg = str(e.value)
    assert "BAAI/Emotiontalk is gated" in msg and "https://huggingface.co/datasets/BAAI/Emotiontalk" in msg
    assert "hf auth login" in msg and "HF_TOKEN" in msg


@pytest.mark.parametrize("error", [httpx2.ConnectError("name resolution failed"),
                                   LocalEntryNotFoundError("cannot find the requested files")])
def test_no_network_says_so_in_one_line(hub, tmp_path, capsys, error):
    hub.error = error
    assert download.main(["corpus", "--db_root", str(tmp_path / "db")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot reach the Hugging Face Hub" in err and "Traceback" not in err


def write_conf(conf: Path, name: str, text: str) -> None:
    conf.mkdir(parents=True, exist_ok=True)
    (conf / f"{name}.yaml").write_text(text, encoding="utf-8")


def test_a_configs_checkpoint_folder_is_fetched_into_its_ckpt(hub, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hub.add("org/tiny-bert", "config.json", b"{}")
    hub.add("org/tiny-bert", "sub/vocab.txt", b"a\n")
    hub.add("s3prl/converted_ckpts", "wavlm_base.pt", b"weights")
    conf = tmp_path / "conf"
    write_conf(conf, "my_bert", "modality: text\nname: hf_text\nckpt: downloads/models/tiny-bert\n"
               "download: https://huggingface.co/org/tiny-bert (every file of the Hugging Face repository)\n")
    write_conf(conf, "my_wavlm", "name: wavlm_local\nckpt: downloads/models/my_wavlm.pt\n"
               "download: https://huggingface.co/s3prl/converted_ckpts/resolve/main/wavlm_base.pt (or elsewhere)\n")
    assert download.main(["upstream", "my_bert my_wavlm", "--conf_dir", str(conf)]) == 0
    assert (tmp_path / "downloads/models/tiny-bert/config.json").read_bytes() == b"{}"
    assert (tmp_path / "downloads/models/tiny-bert/sub/vocab.txt").is_file()
    assert (tmp_path / "downloads/models/my_wavlm.pt").read_bytes() == b"weights"
    assert hub.downloads == [("org/tiny-bert", "*"), ("s3prl/converted_ckpts", "wavlm_base.pt")]


def test_configs_without_a_plain_hub_repo_say_what_to_do(hub, tmp_path, capsys):
    conf = tmp_path / "conf"
    write_conf(conf, "delta", "modality: text\nname: hf_text\nckpt: downloads/models/v0\n"
               "download: https://huggingface.co/lmsys/vicuna-7b-delta-v0 applied to LLaMA-7B (see above)\n")
    write_conf(conf, "nockpt", "name: fbank\n")
    assert download.main(["upstream", "delta", "--conf_dir", str(conf)]) == 1
    err = capsys.readouterr().err
    assert "applied to LLaMA-7B" in err and "as the config's comments say" in err
    assert download.main(["upstream", "nockpt", "--conf_dir", str(conf)]) == 0
    assert "nothing to download" in capsys.readouterr().out and hub.downloads == []


def test_every_shipped_config_with_a_ckpt_resolves_or_is_refused_by_name():
    """Each shipped config's 'download' parses to a Hub repo, except those that need a person (named here)."""
    manual = set()
    for path in sorted((ROOT / "conf" / "upstream").glob("*.yaml")):
        cfg = download.load_config(path)
        if cfg.get("ckpt") and download.hub_source(cfg.get("download")) is None:
            manual.add(path.stem)
    assert manual == {"text_vicuna_7b"}


def test_the_shipped_table_lists_the_four_tars():
    assert tuple(download.read_table()) == TARS


def test_a_401_on_a_checkpoint_says_accept_the_licence_and_log_in(hub, tmp_path, capsys):
    conf = tmp_path / "conf"
    write_conf(conf, "gated_lm", "modality: text\nname: hf_text\nckpt: downloads/models/lm\n"
               "download: https://huggingface.co/org/gated-lm\n")
    hub.error = HfHubHTTPError("401 Unauthorized",
                               response=httpx2.Response(401, request=httpx2.Request("GET", "https://x")))
    assert download.main(["upstream", "gated_lm", "--conf_dir", str(conf)]) == 1
    err = capsys.readouterr().err
    assert "refused access to org/gated-lm (HTTP 401)" in err and "https://huggingface.co/org/gated-lm" in err
    assert "hf auth login" in err and err.count("\n") == 1
