#!/usr/bin/env python3
"""Fetch what the recipe needs from the Hugging Face Hub: the EmotionTalk release, or an upstream's checkpoint.

Usage:
  local/download.py corpus --db_root DIR [--tars "Audio Text Video Multimodal"] [--archive_dir DIR]
  local/download.py upstream NAME [NAME ...]      # conf/upstream/NAME.yaml: its 'download' repo into its 'ckpt'

corpus: each tar of the gated dataset BAAI/Emotiontalk is downloaded into --archive_dir (resumable: an
interrupted download continues where it stopped), its size and SHA-256 checked against conf/download/emotiontalk.tsv
and the Hub's own record of the file, then extracted into --db_root (members that would land outside it are
refused before anything is written). A tar verified and extracted once is recorded in <db_root>/.download/ and not
fetched again. The dataset is gated: accept its licence on https://huggingface.co/datasets/BAAI/Emotiontalk, then
log in here (`hf auth login`, or set HF_TOKEN).
upstream: snapshot of the Hub repository named in the config's 'download' into its 'ckpt' folder (a single-file
URL .../resolve/<rev>/<file> fetches that file as 'ckpt'). A config whose 'download' is not a plain Hub repository
(e.g. a delta to apply to other weights) is refused with its text: follow the config's comments.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled,
                                    RepositoryNotFoundError)

try:  # the HTTP client of huggingface_hub 2.x; 1.x used httpx
    from httpx2 import TransportError
except ImportError:  # pragma: no cover
    from httpx import TransportError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from etser.features.upstream import CONF_DIR, UpstreamError, load_config  # noqa: E402

REPO_ID = "BAAI/Emotiontalk"
TABLE = Path(__file__).resolve().parents[1] / "conf" / "download" / "emotiontalk.tsv"
MARKERS = ".download"          # under db_root: one JSON per verified, extracted tar
HUB_URL = re.compile(r"https://huggingface\.co/(?!datasets/)([\w.-]+/[\w.-]+)(?:/resolve/([^/\s]+)/(\S+))?")


class DownloadError(Exception):
    pass


@dataclass(frozen=True)
class Expected:
    size: int
    sha256: str


# ---------------------------------------------------------------- Hub errors as one line each

def _hub_call(what: str, repo: str, kind: str, fn, /, *args, **kwargs):
    """``fn(*args, **kwargs)``, its Hub failures turned into a DownloadError saying what to do."""
    page = f"https://huggingface.co/{'datasets/' if kind == 'dataset' else ''}{repo}"
    login = "log in here with `hf auth login` (or set HF_TOKEN to a token of that account)"
    try:
        return fn(*args, **kwargs)
    except GatedRepoError:
        raise DownloadError(f"{what}: {repo} is gated: accept its licence (conditions of access) on {page} while "
                            f"logged in to the Hub, then {login}") from None
    except RepositoryNotFoundError as e:
        raise DownloadError(f"{what}: {page} is not visible to you (HTTP {_status(e)}): check the name, or, if it "
                            f"is gated or private, accept its licence on that page and {login}") from None
    except HfHubHTTPError as e:
        if _status(e) in (401, 403):
            raise DownloadError(f"{what}: the Hub refused access to {repo} (HTTP {_status(e)}): accept its licence "
                                f"on {page} and {login}") from None
        raise DownloadError(f"{what}: the Hub answered HTTP {_status(e)} for {repo}: {e}") from None
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, TransportError) as e:
        raise DownloadError(f"{what}: cannot reach the Hugging Face Hub ({type(e).__name__}); check the network "
                            "(and HF_HUB_OFFLINE, HF_ENDPOINT for a mirror) and rerun: finished files are kept, an "
                            "interrupted download resumes") from None


def _status(e: HfHubHTTPError) -> int | None:
    return getattr(getattr(e, "response", None), "status_code", None)


# ---------------------------------------------------------------- the corpus

def read_table(path: Path = TABLE) -> dict[str, tuple[int | None, str | None]]:
    """tar name -> (size, sha256), None where the table has '-'."""
    table = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 3 or not fields[1].strip().isdigit() and fields[1].strip() != "-" or \
                not re.fullmatch(r"[0-9a-f]{64}|-", fields[2].strip()):
            raise DownloadError(f"{path}, line {n}: expected 'name<TAB>size<TAB>sha256' ('-' for unknown), "
                                f"got {line!r}")
        size, sha = fields[1].strip(), fields[2].strip()
        table[fields[0].strip()] = (None if size == "-" else int(size), None if sha == "-" else sha)
    return table


def expected_values(names: list[str], revision: str | None, table: dict) -> dict[str, Expected]:
    """Size and SHA-256 per tar: the Hub's LFS record, which must equal the table's published value when given."""
    infos = _hub_call("listing the release", REPO_ID, "dataset", HfApi().get_paths_info, REPO_ID, names,
                      repo_type="dataset", revision=revision)
    hub = {getattr(i, "path", None): i for i in infos}
    out = {}
    for name in names:
        info = hub.get(name)
        if info is None or getattr(info, "lfs", None) is None:
            raise DownloadError(f"{REPO_ID} has no LFS file {name} at revision {revision or 'main'}; "
                                f"the tars of {TABLE} are {', '.join(table)}")
        size, sha = table[name]
        for what, mine, theirs in (("size", size, info.lfs.size), ("SHA-256", sha, info.lfs.sha256)):
            if mine is not None and mine != theirs:
                raise DownloadError(f"{name}: the Hub records {what} {theirs} but {TABLE} says {mine}: the file on "
                                    "the Hub changed; nothing downloaded")
        out[name] = Expected(info.lfs.size, info.lfs.sha256)
    return out


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, want: Expected) -> None:
    size = path.stat().st_size
    if size != want.size:
        raise DownloadError(f"{path}: {size} bytes, expected {want.size}: delete it and rerun (nothing extracted)")
    got = sha256_of(path)
    if got != want.sha256:
        raise DownloadError(f"{path}: SHA-256 {got}, expected {want.sha256}: the file is corrupt; delete it and "
                            "rerun (nothing extracted)")


def extract(path: Path, db_root: Path) -> int:
    """Extract ``path`` into ``db_root``; every member is checked by tarfile's 'data' filter before any is written."""
    with tarfile.open(path) as tf:
        members = tf.getmembers()
        for m in members:
            try:
                tarfile.data_filter(m, str(db_root))
            except tarfile.FilterError as e:
                raise DownloadError(f"{path}: member {m.name!r} refused ({e}); nothing extracted") from None
        tf.extractall(db_root, members=members, filter="data")
    return len(members)


def marker_path(db_root: Path, name: str) -> Path:
    return db_root / MARKERS / f"{name}.json"


def done(db_root: Path, name: str, table: dict) -> bool:
    """True when ``name`` was verified and extracted into ``db_root`` (and agrees with the table's values)."""
    try:
        rec = json.loads(marker_path(db_root, name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    size, sha = table[name]
    return (size is None or rec.get("size") == size) and (sha is None or rec.get("sha256") == sha)


def fetch_corpus(db_root: str | Path, tars: list[str] | None = None, archive_dir: str | Path | None = None,
                 revision: str | None = None, table_path: Path = TABLE, log=print) -> list[str]:
    """Download, verify and extract the release's tars; returns the names fetched (an empty list: all done)."""
    db_root, table = Path(db_root), read_table(table_path)
    names = tars or list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise DownloadError(f"unknown tar {', '.join(unknown)}: {table_path} lists {', '.join(table)}")
    todo = [n for n in names if not done(db_root, n, table)]
    for n in sorted(set(names) - set(todo), key=names.index):
        log(f"{n}: verified and extracted in {db_root} before ({marker_path(db_root, n)}); not fetched")
    if not todo:
        return []
    archive_dir = Path(archive_dir) if archive_dir else db_root.parent / f"{db_root.name}_tars"
    want = expected_values(todo, revision, table)
    for name in todo:
        log(f"{name}: downloading {want[name].size / 1e9:.2f} GB into {archive_dir} (resumes if interrupted)")
        path = Path(_hub_call(f"downloading {name}", REPO_ID, "dataset", hf_hub_download, REPO_ID, name,
                              repo_type="dataset", revision=revision, local_dir=archive_dir))
        verify(path, want[name])
        db_root.mkdir(parents=True, exist_ok=True)
        n = extract(path, db_root)
        marker = marker_path(db_root, name)
        marker.parent.mkdir(parents=True, exist_ok=True)
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(json.dumps({"repo": REPO_ID, "revision": revision or "main", "file": name,
                                   "size": want[name].size, "sha256": want[name].sha256, "members": n}) + "\n",
                       encoding="utf-8")
        os.replace(tmp, marker)
        log(f"{name}: size and SHA-256 verified, {n} members extracted into {db_root}")
    return todo


# ---------------------------------------------------------------- an upstream's checkpoint

def hub_source(download: str | None) -> tuple[str, str | None, str | None] | None:
    """(repo, revision, file) from a config's 'download' text, or None when it is not a plain Hub repository.

    Accepted: 'https://huggingface.co/<org>/<repo>' or '.../resolve/<rev>/<file>', optionally after 'every file
    of' and followed by a parenthesised remark; anything else (e.g. 'applied to LLaMA-7B') needs a person.
    """
    if not download:
        return None
    m = HUB_URL.search(download)
    if m is None:
        return None
    rest = (download[:m.start()] + download[m.end():])
    while re.search(r"\([^()]*\)", rest):
        rest = re.sub(r"\([^()]*\)", "", rest)
    if rest.strip() not in ("", "every file of"):
        return None
    return m.group(1), m.group(2), m.group(3)


def fetch_upstream(name: str, conf_dir: str | Path = CONF_DIR, log=print) -> Path | None:
    """Fetch the checkpoint of ``conf_dir/<name>.yaml`` into its 'ckpt'; None when the config needs none."""
    try:
        cfg = load_config(name, conf_dir)
    except UpstreamError as e:
        raise DownloadError(str(e)) from None
    ckpt = cfg.get("ckpt") or (cfg.get("args") or {}).get("ckpt")
    if not ckpt or str(ckpt).startswith(("http://", "https://")):
        log(f"{name}: no local checkpoint ('ckpt') in the config: nothing to download")
        return None
    source = hub_source(cfg.get("download"))
    if source is None:
        raise DownloadError(
            f"{name}: the config's 'download' ({cfg.get('download') or 'absent'}) is not a Hugging Face repository "
            f"this command can fetch as is; get the checkpoint as the config's comments say and put it at "
            f"{Path(ckpt).resolve()}")
    repo, revision, file = source
    ckpt = Path(ckpt)
    if file is None:
        log(f"{name}: fetching every file of {repo} into {ckpt}")
        _hub_call(f"{name}: fetching {repo}", repo, "model", snapshot_download, repo, revision=revision,
                  local_dir=ckpt)
    else:
        log(f"{name}: fetching {file} of {repo} as {ckpt}")
        got = Path(_hub_call(f"{name}: fetching {repo}/{file}", repo, "model", hf_hub_download, repo, file,
                             revision=revision, local_dir=ckpt.parent))
        if got.resolve() != ckpt.resolve():
            shutil.move(got, ckpt)
    return ckpt


# ---------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    corpus = sub.add_parser("corpus", help=f"the release's tars ({REPO_ID}) into --db_root")
    corpus.add_argument("--db_root", required=True, help="folder to extract into (then ./run.sh --db_root DIR)")
    corpus.add_argument("--tars", nargs="+", default=None,
                        help="tars to fetch, e.g. Audio Text (default: the four of conf/download/emotiontalk.tsv)")
    corpus.add_argument("--archive_dir", default=None, help="where the tars are kept (default: <db_root>_tars)")
    corpus.add_argument("--revision", default=None, help="a commit or branch of the dataset repo (default: main)")
    up = sub.add_parser("upstream", help="a config's checkpoint into its 'ckpt'")
    up.add_argument("names", nargs="+", help="conf/upstream/<name>.yaml names or YAML paths")
    up.add_argument("--conf_dir", default=CONF_DIR, help=f"folder of the configs (default: {CONF_DIR})")
    args = parser.parse_args(argv)
    try:
        if args.what == "corpus":
            tars = [t if t.endswith(".tar") else f"{t}.tar" for item in args.tars or [] for t in item.split()]
            fetch_corpus(args.db_root, tars or None, args.archive_dir, args.revision)
        else:
            for name in [n for item in args.names for n in item.split()]:
                fetch_upstream(name, args.conf_dir)
    except DownloadError as e:
        print(f"ERROR: local/download.py: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a full disk, an unwritable folder: one line, no traceback
        print(f"ERROR: local/download.py: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
