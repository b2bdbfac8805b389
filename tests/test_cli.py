"""The command line: what users see for good and bad input (exit 2, one message, nothing lost)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from stageprobe.cli import app
from stageprobe.features import FeatureStore

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes is not None else "")


def test_models_lists_presets_and_architectures() -> None:
    code, out = invoke("models")
    assert code == 0
    for name in ("qwen2.5-vl-tiny", "qwen2-vl-tiny", "pixels", "qwen2.5-vl-7b-random", "qwen2_5_vl"):
        assert name in out


def test_stages_json_gives_grid_and_width() -> None:
    code, out = invoke("stages", "qwen2.5-vl-tiny", "--image-size", "224", "--json")
    assert code == 0
    stages = {s["name"]: s for s in json.loads(out)}
    assert stages["vision.pre_merge"]["grid"] == [1, 16, 16]
    assert stages["vision.post_merge"]["grid"] == [1, 8, 8]
    assert stages["vision.pre_merge"]["tokens"] == 4 * stages["vision.post_merge"]["tokens"]


def test_unknown_model_lists_presets() -> None:
    code, out = invoke("stages", "qwen-tiny")
    assert code == 2
    assert "unknown model 'qwen-tiny'" in out and "qwen2.5-vl-tiny" in out
    assert "Traceback" not in out


def test_hub_id_not_available_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out = invoke("stages", "Qwen/Qwen2.5-VL-7B-Instruct")
    assert code == 2
    assert "not found locally" in out and "local directory" in out


def test_unsupported_architecture(tmp_path: Path) -> None:
    from transformers import BertConfig

    config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    config.save_pretrained(tmp_path)
    code, out = invoke("stages", str(tmp_path))
    assert code == 2
    assert "'bert' model" in out and "qwen2_5_vl" in out


def test_stage_pattern_matching_nothing_lists_stages(tmp_path: Path) -> None:
    code, out = invoke("extract", "--model", "pixels", "--dataset", "shapes", "--n", "4",
                       "--out", str(tmp_path / "store"), "--stages", "vision.*")
    assert code == 2
    assert "matches no stage" in out and "pixels.patch" in out


def test_corrupt_image_is_named_and_skip_bad_counts_it(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (56, 56), (40 * i, 90, 200)).save(folder / f"ok{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    code, out = invoke("extract", "--model", "pixels", "--dataset", f"images:{folder}", "--out", str(tmp_path / "a"))
    assert code == 2
    assert "broken.png" in out and "--skip-bad" in out
    code, out = invoke("extract", "--model", "pixels", "--dataset", f"images:{folder}", "--out", str(tmp_path / "b"),
                       "--skip-bad")
    assert code == 0, out
    store = FeatureStore.open(tmp_path / "b")
    assert len(store) == 3
    assert "broken.png" in json.dumps(store.manifest)


def test_refused_store_is_left_untouched(tmp_path: Path) -> None:
    store = tmp_path / "store"
    assert invoke("extract", "--model", "pixels", "--dataset", "shapes", "--n", "4", "--out", str(store))[0] == 0
    before = {p: p.read_bytes() for p in store.rglob("*") if p.is_file()}
    code, out = invoke("extract", "--model", "pixels", "--dataset", "shapes", "--n", "5", "--out", str(store))
    assert code == 2
    assert "different" in out
    assert {p: p.read_bytes() for p in store.rglob("*") if p.is_file()} == before


def test_run_rejects_contradicting_sizes(tmp_path: Path) -> None:
    code, out = invoke("run", "--quick", "--full", "--out", str(tmp_path / "run"))
    assert code == 2
    assert "--quick and --full" in out


def test_device_map_on_a_preset_or_under_torchrun_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = invoke("extract", "--model", "qwen2.5-vl-tiny", "--dataset", "shapes", "--n", "4",
                       "--out", str(tmp_path / "store"), "--device-map", "auto")
    assert code == 2 and "--device-map" in out and "checkpoint" in out
    monkeypatch.setenv("WORLD_SIZE", "2")
    code, out = invoke("extract", "--model", "qwen2.5-vl-tiny", "--dataset", "shapes", "--n", "4",
                       "--out", str(tmp_path / "store"), "--device-map", "auto")
    assert code == 2 and "torchrun" in out
    assert not (tmp_path / "store").exists()


def test_probe_workers_below_one_is_refused(tmp_path: Path) -> None:
    code, out = invoke("run", "--quick", "--probe-workers", "0", "--out", str(tmp_path / "run"))
    assert code == 2 and "--probe-workers" in out
    assert not (tmp_path / "run").exists()


def test_a_mistyped_model_leaves_no_run_directory(tmp_path: Path) -> None:
    code, out = invoke("run", "--quick", "--model", "qwen-typo", "--out", str(tmp_path / "run"))
    assert code == 2 and "unknown model 'qwen-typo'" in out
    assert not (tmp_path / "run").exists()
