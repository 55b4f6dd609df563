"""The run fits the release stage 1 found (data/release.json): families the release lacks are skipped with one
line each when they come from defaults, and refused when an option asks for them; options are checked before
any job; stage 4 plans only finished trainings and rescores on --overwrite true; each backend has a default
head."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from etser.datadir import RELEASE_RECORD, release_tables, write_release_record
from etser.launch.plan import check_options, default_heads, fit_release, main as plan_main
from helpers_release import write_utterance

ROOT = Path(__file__).resolve().parents[1]


def meta(modality: str) -> str:
    return json.dumps({"modality": modality, "upstream": "x", "config_hash": "0", "num_layers": 1, "dim": 4})
SPEECH_TEXT = ["wav.scp", "utt2spk", "spk2utt", "text", "text_raw", "utt2dur", "utt2caption", "utt2emo_audio",
               "utt2emo_text", "utt2emo_video"]
CAPTIONS = [f"utt2caption_{k}" for k in ("speaker", "style", "emotion", "overall")]
FULL = SPEECH_TEXT + CAPTIONS + ["video.scp", "utt2emo_multi", "utt2sentiment"]
DEFAULTS = dict(upstreams=["fbank_no_cmvn", "text_baseline", "visual_baseline"], tasks=[], fusion=["attention"],
                fusion_streams="speech=fbank_no_cmvn text=text_baseline visual=visual_baseline", fusion_tasks=[],
                caption=True, caption_kinds=["speaker", "style", "emotion", "overall"],
                caption_upstream="fbank_no_cmvn", given=set())


@pytest.fixture()
def in_repo(monkeypatch):
    monkeypatch.chdir(ROOT)


def record(tmp_path: Path, tables: list[str]) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    write_release_record(data, {}, [], {s: tables for s in ("train", "val", "test")})
    return data


def fit(data: Path, **kw):
    return fit_release(data, **{**DEFAULTS, **kw}, conf_root=ROOT)


def test_stage_1_records_what_it_wrote(tmp_path):
    from emotiontalk.release import prepare

    db = tmp_path / "db"
    for g in (1, 13, 15):   # one group of each set (train, val, test)
        write_utterance(db, f"G{g:05d}_01_01_001", "happy", modalities=("audio", "text", "video"))
    prepare(db, tmp_path / "data", progress=False, echo=False)
    rec = json.loads((tmp_path / "data" / RELEASE_RECORD).read_text())
    assert rec["parts"]["mp4"] is False and rec["parts"]["captions"] is True
    assert any(line.startswith("no video mp4") for line in rec["ruled_out"])
    assert set(rec["tables"]["train"]) == {p.name for p in (tmp_path / "data" / "train").iterdir()} - {"excluded"}
    assert "video.scp" not in release_tables(tmp_path / "data", "train")


def test_a_full_release_runs_every_family(tmp_path, in_repo):
    f = fit(record(tmp_path, FULL))
    assert f.errors == [] and f.notes == []
    assert f.values == {"upstreams": "fbank_no_cmvn text_baseline visual_baseline", "fusion": "attention",
                        "fusion_streams": DEFAULTS["fusion_streams"], "caption": "true",
                        "caption_kinds": "speaker style emotion overall"}


def test_speech_only_release_skips_visual_multi_and_fusion(tmp_path, in_repo):
    f = fit(record(tmp_path, SPEECH_TEXT + CAPTIONS))
    assert f.errors == []
    assert f.values["upstreams"] == "fbank_no_cmvn text_baseline" and f.values["fusion"] == ""
    assert f.values["caption"] == "true"
    assert "Skipped visual (visual_baseline): this release has no video.scp" in f.notes[0]
    assert any(n.startswith("Skipped speech task(s) multi_four multi_all: this release has no utt2emo_multi")
               for n in f.notes)
    assert any(n.startswith("Skipped fusion (attention): none of its tasks") for n in f.notes)


def test_stage_2_alone_on_a_data_dir_of_the_test_set_only(tmp_path, in_repo):
    """Stage 1 and 2 with --sets test (e.g. features for a trained model): no train set was recorded."""
    data = tmp_path / "data"
    data.mkdir()
    write_release_record(data, {}, [], {"test": SPEECH_TEXT + CAPTIONS})
    f = fit(data, train=False)
    assert f.errors == [] and f.values["upstreams"] == "fbank_no_cmvn text_baseline"
    with pytest.raises(ValueError, match="not a stage-1 release record"):   # training needs the train set
        fit(data, train=True)


def test_release_without_captions_skips_captioning(tmp_path, in_repo):
    f = fit(record(tmp_path, [t for t in FULL if t not in CAPTIONS]))
    assert f.errors == [] and f.values["caption"] == "false" and f.values["fusion"] == "attention"
    assert f.notes == ["Skipped captioning: this release has no utt2caption_<kind> (" + str(tmp_path / "data")
                       + f"/{RELEASE_RECORD}) for any of speaker style emotion overall"]


@pytest.mark.parametrize("given, message", [
    (dict(upstreams=["visual_baseline"], given={"upstreams"}),
     "--upstreams visual_baseline: its visual features are made from data/train/video.scp, and this release has "
     "no video.scp"),
    (dict(tasks=["multi_four"], given={"tasks"}), "--tasks multi_four: its labels are data/train/utt2emo_multi"),
    (dict(fusion_streams="speech=fbank_no_cmvn visual=visual_baseline", given={"fusion_streams"}),
     "--fusion_streams visual=visual_baseline: this release has no video.scp"),
    (dict(caption_kinds=["style"], given={"caption_kinds"}),
     "--caption_kinds style: this release has no utt2caption_style"),
    (dict(caption_asked=True, given={"tasks"}), "--caption_kinds speaker: this release has no utt2caption_speaker"),
])
def test_an_option_asking_for_what_the_release_lacks_is_an_error(tmp_path, in_repo, given, message):
    f = fit(record(tmp_path, [t for t in SPEECH_TEXT]), **given)
    assert any(e.startswith(message) for e in f.errors), f.errors


def test_stream_names_are_checked_against_a_dump_dirs_modality(tmp_path, in_repo):
    dump = tmp_path / "dump" / "t" / "train"
    dump.mkdir(parents=True)
    (dump / "meta.json").write_text(meta("text"))
    errors = check_options(["fbank_no_cmvn"], ["superb"], [], ["1"], fusion=["attention"],
                           fusion_streams=f"speech=fbank_no_cmvn visual={dump.parent}", conf_root=ROOT)
    assert errors == [f"--fusion_streams visual={dump.parent}: {dump.parent} is a text upstream ({dump}/meta.json), "
                      f"not visual: name each stream by its modality (text={dump.parent})"]


def test_espnet_has_a_default_head_of_its_own(in_repo):
    assert default_heads("ours") == ["superb"]
    heads = default_heads("espnet")
    assert heads == ["feats"] and (ROOT / "conf" / "espnet" / "feats.yaml").is_file()
    assert check_options(["fbank_no_cmvn"], heads, ["speech_four"], ["1"], backend="espnet", conf_root=ROOT) == []


def _trained(tmp_path: Path, done: bool) -> tuple[Path, Path]:
    feats = tmp_path / "dump" / "fb"
    (feats / "train").mkdir(parents=True)
    (feats / "train" / "meta.json").write_text(meta("speech"))
    exp = tmp_path / "exp" / "fb" / "superb" / "speech_four" / "seed1"
    (exp / "decode_test").mkdir(parents=True)
    (exp / "decode_test" / "metrics.json").write_text("{}")
    if done:
        (exp / "done").write_text("{}")
    return feats, exp


def _plan_score(tmp_path: Path, feats: Path, overwrite: str) -> int:
    return plan_main(["score", "--check_trained", "true", "--feats_dirs", str(feats), "--heads", "superb", "--seeds",
                      "1", "--tasks", "speech_four", "--sets", "train test", "--exp_root", str(tmp_path / "exp"),
                      "--data_dir", str(tmp_path / "data"), "--overwrite", overwrite,
                      "--out", str(tmp_path / "score_jobs.txt")])


def test_stage_4_before_stage_3_is_one_clear_line(tmp_path, in_repo, capsys):
    feats, exp = _trained(tmp_path, done=False)
    assert _plan_score(tmp_path, feats, "false") == 1
    err = capsys.readouterr().err
    assert err == (f"error: 1 of 1 training(s) to score are not finished (no {exp}/done): run stage 3 first "
                   "(./run.sh --stage 3 with the same options)\n")


@pytest.mark.parametrize("overwrite, kept", [("false", True), ("true", False)])
def test_overwrite_true_rescores(tmp_path, in_repo, overwrite, kept):
    feats, exp = _trained(tmp_path, done=True)
    assert _plan_score(tmp_path, feats, overwrite) == 0
    assert (exp / "decode_test" / "metrics.json").is_file() == kept
    assert (tmp_path / "score_jobs.txt").read_text().endswith(f"{exp}\n")


# ---------------------------------------------------------------- the default run on partial releases

def _partial_release(src: Path, dst: Path, multimodal: bool, captions: bool) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    if not multimodal:
        shutil.rmtree(dst / "Multimodal")
    if not captions:
        for path in (dst / "Audio").rglob("*.json"):
            try:   # the mini corpus has BOMs, debris and broken JSON on purpose: those stay as they are
                obj = json.loads(path.read_text(encoding="utf-8-sig"))
            except (ValueError, OSError):
                continue
            if isinstance(obj, dict) and obj.pop("sourceAttr", None) is not None:
                path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return dst


# Stage 3's default is three seeds; one keeps the recipe test short. Everything else is the default run.
FAST_DEFAULT = ("--seeds", "1", "--nj", "2")


def test_default_run_on_a_speech_only_release(small_release, tmp_path):
    from helpers_faults import make_workdir, run_recipe

    w = make_workdir(tmp_path / "w")
    db = _partial_release(small_release, tmp_path / "speech_only", multimodal=False, captions=True)
    r = run_recipe(w, "--db_root", str(db), *FAST_DEFAULT, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Skipped visual (visual_baseline): this release has no video.scp (data/release.json)" in r.stderr
    assert "Skipped fusion (attention): none of its tasks (multi_four multi_all sentiment) has labels" in r.stderr
    results = (w / "exp" / "RESULTS.md").read_text()
    for title in ("Speech(Four)", "Text(Four)", "Speech(All)", "Text(All)"):
        assert title in results, results
    assert "Visual(" not in results and "Multi(" not in results
    assert "## Captioning (test)" in results
    assert not list((w / "dump").glob("visual_baseline_*"))   # no visual extraction was started


def test_default_run_on_a_release_without_captions(small_release, tmp_path):
    from helpers_faults import make_workdir, run_recipe

    w = make_workdir(tmp_path / "w")
    db = _partial_release(small_release, tmp_path / "no_captions", multimodal=True, captions=False)
    r = run_recipe(w, "--db_root", str(db), *FAST_DEFAULT, timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Skipped captioning: this release has no utt2caption_<kind> (data/release.json)" in r.stderr
    results = (w / "exp" / "RESULTS.md").read_text()
    for title in ("Speech(Four)", "Text(Four)", "Visual(Four)", "Multi(Four)"):
        assert title in results, results
    assert not (w / "exp" / "caption").exists()


def test_parse_options_says_which_options_were_given(tmp_path):
    import subprocess

    (tmp_path / "c.conf").write_text("fusion=tfn\n")
    script = ('upstreams=a; fusion=attention; caption_kinds=k; . utils/parse_options.sh; '
              'echo "[${po_given}] ${upstreams} ${fusion}"')
    r = subprocess.run(["bash", "-c", script, "run.sh", "--config", str(tmp_path / "c.conf"), "--upstreams", "b",
                        "--upstreams", "c"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert r.stdout == "[ fusion upstreams ] c tfn\n"
