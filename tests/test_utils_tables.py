"""utils/split_scp.py, filter_scp.py, utt2spk_to_spk2utt.py, spk2utt_to_utt2spk.py."""

from __future__ import annotations

import ast
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from etser.datadir import contiguous_parts

ROOT = Path(__file__).resolve().parents[1]
UTILS = ROOT / "utils"
SCRIPTS = ("split_scp.py", "filter_scp.py", "utt2spk_to_spk2utt.py", "spk2utt_to_utt2spk.py")



def run(script: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(UTILS / script), *args], input=stdin, capture_output=True,
                          text=True, timeout=60, encoding="utf-8")


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def scp(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """wav.scp (paths with spaces, Chinese) and utt2spk: speakers with 3, 1, 5, 2 and 4 utterances."""
    counts = {"S01": 3, "S02": 1, "S05": 5, "S06": 2, "S13": 4}
    lines, spk_lines = [], []
    for spk, n in counts.items():
        for i in range(n):
            utt = f"{spk}-G00004_01_{spk[1:]}_{i:03d}"
            lines.append(f"{utt} /data/情感 {i}/{utt}.wav")
            spk_lines.append(f"{utt} {spk}")
    return (write(tmp_path / "wav.scp", "\n".join(lines) + "\n"),
            write(tmp_path / "utt2spk", "\n".join(spk_lines) + "\n"), lines)


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


# ---- split_scp ----

@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 15])
def test_split_even_contiguous_and_complete(scp, tmp_path, n):
    wav, _, lines = scp
    outs = [tmp_path / f"out.{i}" for i in range(1, n + 1)]
    result = run("split_scp.py", str(wav), *map(str, outs))
    assert result.returncode == 0, result.stderr
    parts = [read_lines(o) for o in outs]
    assert [line for part in parts for line in part] == lines  # contiguous, input order, nothing lost
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1, sizes


def test_split_more_parts_than_lines(scp, tmp_path):
    wav, _, lines = scp
    outs = [str(tmp_path / f"out.{i}") for i in range(1, len(lines) + 2)]
    result = run("split_scp.py", str(wav), *outs)
    assert result.returncode == 1
    assert "more parts than lines" in result.stderr and str(wav) in result.stderr
    assert not Path(outs[0]).exists()
    result = run("split_scp.py", str(wav), str(tmp_path / "no such dir" / "out.1"))
    assert result.returncode == 1 and "no such dir" in result.stderr


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_split_by_speaker(scp, tmp_path, n):
    wav, utt2spk, lines = scp
    outs = [tmp_path / f"out.{i}" for i in range(1, n + 1)]
    result = run("split_scp.py", "--utt2spk", str(utt2spk), str(wav), *map(str, outs))
    assert result.returncode == 0, result.stderr
    parts = [read_lines(o) for o in outs]
    assert [line for part in parts for line in part] == lines
    speakers = [{line.split("-")[0] for line in part} for part in parts]
    assert all(speakers), "empty part"
    for i in range(n):
        for j in range(i + 1, n):
            assert not speakers[i] & speakers[j], f"a speaker is in parts {i + 1} and {j + 1}"
    if n == 2:  # 15 lines: 3+1+5 | 2+4 is the closest cut to 7.5
        assert [len(p) for p in parts] == [9, 6]


def test_split_by_speaker_more_parts_than_speakers(scp, tmp_path):
    wav, utt2spk, _ = scp
    result = run("split_scp.py", "--utt2spk", str(utt2spk), str(wav), *[str(tmp_path / f"o.{i}") for i in range(6)])
    assert result.returncode == 1
    assert "5 speakers" in result.stderr and "more parts than speakers" in result.stderr


def test_split_by_speaker_errors(scp, tmp_path):
    wav, utt2spk, lines = scp
    shuffled = write(tmp_path / "shuffled.scp", "\n".join([lines[0], lines[5], lines[1]]) + "\n")
    result = run("split_scp.py", "--utt2spk", str(utt2spk), str(shuffled), str(tmp_path / "a"), str(tmp_path / "b"))
    assert result.returncode == 1
    assert "shuffled.scp:3" in result.stderr and "'S01'" in result.stderr and "not contiguous" in result.stderr
    extra = write(tmp_path / "extra.scp", lines[0] + "\nS99-x /x.wav\n")
    result = run("split_scp.py", "--utt2spk", str(utt2spk), str(extra), str(tmp_path / "a"))
    assert result.returncode == 1
    assert "extra.scp:2" in result.stderr and "S99-x" in result.stderr


@pytest.mark.parametrize("spk", [False, True])
def test_job_mode_prints_the_same_partition(scp, tmp_path, spk):
    wav, utt2spk, _ = scp
    opts = ["--utt2spk", str(utt2spk)] if spk else []
    n = 4
    outs = [tmp_path / f"out.{i}" for i in range(1, n + 1)]
    assert run("split_scp.py", *opts, str(wav), *map(str, outs)).returncode == 0
    for job in range(1, n + 1):
        result = run("split_scp.py", *opts, "--nj", str(n), "--job", str(job), str(wav))
        assert result.returncode == 0, result.stderr
        assert result.stdout == outs[job - 1].read_text(encoding="utf-8"), job


@pytest.mark.parametrize("args", [["--nj", "3", "--job", "0"], ["--nj", "3", "--job", "4"], ["--nj", "3"],
                                  ["--job", "1"]])
def test_job_mode_bad_arguments(scp, args):
    wav, _, _ = scp
    result = run("split_scp.py", *args, str(wav))
    assert result.returncode != 0
    assert "--job" in result.stderr or "--nj" in result.stderr


def test_partition_is_balanced():
    rng = random.Random(0)
    for _ in range(300):
        m = rng.randint(1, 40)
        n = rng.randint(1, m)
        ends = contiguous_parts([1] * m, n)
        sizes = [b - a for a, b in zip([0] + ends, ends)]
        assert sum(sizes) == m and len(sizes) == n
        base, extra = divmod(m, n)  # Kaldi's split_scp.pl: the first m % n parts one line longer
        assert sizes == [base + (i < extra) for i in range(n)], (m, n, sizes)
        blocks = [rng.randint(1, 30) for _ in range(m)]
        ends = contiguous_parts(blocks, n)
        assert len(ends) == n and ends[-1] == m and all(a < b for a, b in zip([0] + ends, ends))
    with pytest.raises(ValueError):
        contiguous_parts([1, 2], 3)


# ---- filter_scp ----

def test_filter_keep_and_exclude_in_input_order(scp, tmp_path):
    wav, _, lines = scp
    keys = [line.split()[0] for line in lines]
    # id list in another order, with a value column, an unknown id and a duplicate
    idlist = write(tmp_path / "ids", f"{keys[9]} x\n{keys[2]}\nS77-none\n{keys[9]}\n{keys[0]} y z\n")
    result = run("filter_scp.py", str(idlist), str(wav))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [lines[0], lines[2], lines[9]]
    result = run("filter_scp.py", "--exclude", str(idlist), str(wav))
    assert result.stdout.splitlines() == [line for i, line in enumerate(lines) if i not in (0, 2, 9)]


def test_filter_stdin_field_and_exact_lines(scp, tmp_path):
    _, utt2spk, _ = scp
    idlist = write(tmp_path / "spks", "S02\nS13\n")
    text = utt2spk.read_text(encoding="utf-8").replace(" S02", "\t  S02")  # odd spacing kept as is
    result = run("filter_scp.py", "-f", "2", str(idlist), stdin=text)
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert len(out) == 5 and out[0] == "S02-G00004_01_02_000\t  S02"
    assert all(line.endswith(("S02", "S13")) for line in out)
    result = run("filter_scp.py", "-f", "3", str(idlist), str(utt2spk))
    assert result.returncode == 1 and "utt2spk:1" in result.stderr


# ---- utt2spk <-> spk2utt ----

def test_utt2spk_spk2utt_round_trip(scp, tmp_path):
    _, utt2spk, _ = scp
    result = run("utt2spk_to_spk2utt.py", str(utt2spk))
    assert result.returncode == 0, result.stderr
    spk2utt = result.stdout.splitlines()
    assert [line.split()[0] for line in spk2utt] == ["S01", "S02", "S05", "S06", "S13"]
    assert spk2utt[1] == "S02 S02-G00004_01_02_000"
    assert len(spk2utt[2].split()) == 6
    back = run("spk2utt_to_utt2spk.py", stdin=result.stdout)
    assert back.returncode == 0, back.stderr
    assert back.stdout == utt2spk.read_text(encoding="utf-8")
    from_stdin = run("utt2spk_to_spk2utt.py", stdin=utt2spk.read_text(encoding="utf-8"))
    assert from_stdin.stdout == result.stdout


def test_spk2utt_sorted_in_c_order(tmp_path):
    u2s = write(tmp_path / "utt2spk", "b-2 b\nB-1 B\na-1 a\nb-1 b\n")
    result = run("utt2spk_to_spk2utt.py", str(u2s))
    assert result.stdout == "B B-1\na a-1\nb b-1 b-2\n"


def test_conversion_errors(tmp_path):
    result = run("spk2utt_to_utt2spk.py", stdin="S01 u1 u2\nS02 u3 u1\n")
    assert result.returncode == 1 and "'u1'" in result.stderr and "'S01'" in result.stderr
    result = run("spk2utt_to_utt2spk.py", stdin="S01 u1\nS02\n")
    assert result.returncode == 1 and "'S02'" in result.stderr
    result = run("utt2spk_to_spk2utt.py", str(write(tmp_path / "u", "u1 S01\nu1 S02\n")))
    assert result.returncode == 1 and "duplicate key 'u1'" in result.stderr and "u:2" in result.stderr
    result = run("utt2spk_to_spk2utt.py", str(write(tmp_path / "v", "u1 S01\nu2\n")))
    assert result.returncode == 1 and "'u2'" in result.stderr


# ---- all tools ----

@pytest.mark.parametrize("script", SCRIPTS)
def test_help_and_executable(script):
    assert os.access(UTILS / script, os.X_OK)
    result = run(script, "--help")
    assert result.returncode == 0 and "usage" in result.stdout.lower()


@pytest.mark.parametrize("path", [*(f"utils/{s}" for s in SCRIPTS), "etser/validate.py", "etser/datadir.py"])
def test_only_stdlib_and_datadir_imports(path):
    """These tools must start fast: standard library and etser.datadir only (no torch, no numpy)."""
    tree = ast.parse((ROOT / path).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            assert top in sys.stdlib_module_names or name == "etser.datadir", (path, name)
