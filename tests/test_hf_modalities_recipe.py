"""A tiny randomly initialised text model and image model, saved as local Hugging Face dirs, each run
stages 2-5 of the recipe from one YAML file (as a user plugs in BERT or CLIP checkpoints they downloaded)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from tests.helpers_faults import ROOT, run_recipe
from tests.helpers_video import tiny_image_model
from tests.test_text_upstream import tiny_bert


def _workdir(path: Path, models: Path) -> Path:
    path.mkdir()
    for name in ("run.sh", "path.sh", "cmd.sh", "local", "utils"):
        (path / name).symlink_to(ROOT / name)
    (path / "conf").mkdir()
    for p in (ROOT / "conf").iterdir():
        if p.name != "upstream":
            (path / "conf" / p.name).symlink_to(p)
    shutil.copytree(ROOT / "conf" / "upstream", path / "conf" / "upstream")
    bert = tiny_bert(models / "tiny-bert")
    clip = tiny_image_model("clip", models / "tiny-clip")
    # one YAML each, written as a user would next to the shipped text_bert_base_chinese / visual_clip_vit_b32_layers
    text = yaml.safe_load((ROOT / "conf/upstream/text_bert_base_chinese.yaml").read_text())
    text["ckpt"] = str(bert)
    (path / "conf/upstream/my_bert.yaml").write_text(yaml.safe_dump(text, allow_unicode=True))
    visual = yaml.safe_load((ROOT / "conf/upstream/visual_clip_vit_b32_layers.yaml").read_text())
    visual.update(ckpt=str(clip), sampling={"mode": "uniform", "value": 4})
    visual["face"]["size"] = 32
    (path / "conf/upstream/my_clip.yaml").write_text(yaml.safe_dump(visual))
    return path


def test_tiny_hf_text_and_image_models_run_stages_2_to_5(tmp_path, small_release):
    w = _workdir(tmp_path / "work", tmp_path / "models")
    r = run_recipe(w, "--db_root", small_release, "--upstreams", "my_bert my_clip", "--tasks", "multi_four",
                   "--seeds", "1", "--nj", "2")
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    metas = {json.loads(p.read_text())["upstream"]: json.loads(p.read_text())
             for p in (w / "dump").glob("*/test/meta.json")}
    assert metas["my_bert"]["modality"] == "text" and metas["my_bert"]["num_layers"] == 3
    assert metas["my_clip"]["modality"] == "visual" and metas["my_clip"]["num_layers"] == 3
    for name in ("my_bert", "my_clip"):
        (exp,) = (w / "exp").glob(f"{name}_*/superb/multi_four/seed1")
        m = json.loads((exp / "decode_test" / "metrics.json").read_text())
        assert m["num_utts"] > 0 and 0.0 <= m["ua"] <= 1.0
    results = (w / "exp" / "RESULTS.md").read_text()
    text_part = results.split("### Text", 1)[1].split("###", 1)[0]
    visual_part = results.split("### Visual", 1)[1].split("###", 1)[0]
    assert "my_bert" in text_part and "my_clip" not in text_part
    assert "my_clip" in visual_part
