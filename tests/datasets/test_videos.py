"""`videos:DIR`: clips decoded from files the test writes itself (camera pans over bundled photos,
encoded with PyAV), checked against the frames that made them; order, direction and speed read by
token-flow on the pixel baseline as well as from the uncompressed clips; bad files and bad label
rows listed and skipped; bad folders refused."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from video_files import PanClip, encode, pan_clips, write_labels, write_videos

import stageprobe as sp
from stageprobe.datasets import SPLITS, load_dataset
from stageprobe.datasets import _video_decode as decoding
from stageprobe.datasets.videos import VideoFolderDataset, parse_direction, speed_class
from stageprobe.errors import UserInputError
from stageprobe.probes import ProbeData, fit_probe, split_probe_data

SIZE = 112
#: the probes' clips: 6×6 merged pixel tokens (token-flow reads the 4×4 interior cells)
PROBE_SIZE = 168


@pytest.fixture(scope="module")
def clips() -> list[PanClip]:
    return pan_clips(12, SIZE)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    """64 pans as lossy mp4 and as lossless (libx264rgb, crf 0) mp4: {encoding: (folder, written)}."""
    found = {}
    clips = pan_clips(64, PROBE_SIZE)
    for encoding in ("mp4", "lossless"):
        folder = tmp_path_factory.mktemp(encoding)
        written = write_videos(folder, clips, encoding)
        write_labels(folder / "labels.csv", written)
        found[encoding] = (folder, written)
    return found


def _shown(sample: Any) -> np.ndarray:
    return np.stack([np.asarray(frame) for frame in sample.frames])


@pytest.mark.parametrize("encoding", ["mp4", "webm"])
def test_decoded_frames_match_the_frames_encoded(clips: list[PanClip], tmp_path: Path, encoding: str) -> None:
    """Within the codec's error (4:2:0 chroma on 112 px frames): mean absolute error ≤ 6 of 255, PSNR ≥ 30 dB;
    the sampling of an 8-frame, 8 fps file at frames=8 is every frame, recorded in the target."""
    written = write_videos(tmp_path, clips[:4], encoding)
    dataset = load_dataset(f"videos:{tmp_path}:image_size={SIZE}")
    assert len(dataset) == 4 and dataset.skipped == []
    for sample in dataset:
        shown = _shown(sample)
        recorded = shown[::-1] if sample.target["reversed"] else shown
        original = written[sample.target["path"]].frames
        error = np.abs(recorded.astype(np.float64) - original)
        psnr = 10 * np.log10(255**2 / np.mean(error**2))
        assert error.mean() <= 6 and psnr >= 30, (error.mean(), psnr)
        assert sample.target["frame_indices"] == list(range(8))
        assert sample.target["source_fps"] == pytest.approx(8) and sample.target["source_frames"] == 8
        assert sample.target["image_size"] == (SIZE, SIZE)


def _pixel_splits(spec: str) -> tuple[VideoFolderDataset, dict[str, ProbeData]]:
    dataset = load_dataset(spec)
    samples = list(dataset)
    features = sp.load_model("pixels").extract(videos=[s.frames for s in samples], stages=["pixels.merged"])
    return dataset, split_probe_data(features["pixels.merged"].to(torch.float16), samples)  # type: ignore[return-value]


def _accuracy(splits: dict[str, ProbeData], task: str) -> float:
    result = fit_probe("token-flow", task, splits["train"], splits["val"], splits["test"], seed=0)
    return float(result.metrics[f"{task}_acc"])


def test_order_without_labels_is_balanced_and_read_by_pixels(folders: dict[str, tuple[Path, dict]]) -> None:
    """Half of each split reversed; token-flow on the pixel baseline reads order far above chance (0.5)
    from the measured (phase-correlation) paths alone."""
    folder, _ = folders["mp4"]
    dataset, splits = _pixel_splits(f"videos:{folder}:image_size={PROBE_SIZE}")
    assert dataset.unlabelled_tasks == ("direction", "speed")
    for split in SPLITS:
        shown = [bool(t["reversed"]) for t in splits[split].targets]
        assert abs(2 * sum(shown) - len(shown)) <= 1, (split, shown)
    assert "direction" not in splits["train"].targets[0]
    assert _accuracy(splits, "order") >= 0.85


def test_labelled_direction_and_speed_close_to_the_uncompressed_clips(folders: dict[str, tuple[Path, dict]]) -> None:
    """Labels written as names and as angles, speeds in px/frame: direction and speed (and order) read from the mp4
    clips as well as from the same clips stored losslessly (one of 15 test clips is 0.07), and well above
    chance (1/8, 1/2)."""
    scores = {}
    for encoding, (folder, _) in folders.items():
        dataset, splits = _pixel_splits(f"videos:{folder}:labels={folder / 'labels.csv'}:image_size={PROBE_SIZE}")
        assert dataset.unlabelled_tasks == () and dataset.skipped == []
        scores[encoding] = {task: _accuracy(splits, task) for task in ("direction", "speed", "order")}
    assert scores["mp4"]["direction"] >= 0.85 and scores["mp4"]["speed"] >= 0.7, scores
    assert scores["mp4"]["order"] >= 0.8, scores
    assert abs(scores["mp4"]["direction"] - scores["lossless"]["direction"]) <= 0.1, scores
    assert abs(scores["mp4"]["speed"] - scores["lossless"]["speed"]) <= 0.15, scores


def test_labels_follow_the_file_and_flip_when_shown_reversed(folders: dict[str, tuple[Path, dict]]) -> None:
    folder, written = folders["lossless"]
    dataset = load_dataset(f"videos:{folder}:labels={folder / 'labels.csv'}:image_size={PROBE_SIZE}", n=12)
    assert len(dataset) == 12
    for sample in dataset:
        clip = written[sample.target["path"]]
        flipped = (clip.direction + 4) % 8
        assert sample.target["direction"] == (flipped if sample.target["reversed"] else clip.direction)
        assert sample.target["speed"] == speed_class(clip.speed_px_per_frame, PROBE_SIZE, 2)
        assert sample.group == f"folder:{clip.photo}"


def test_bad_label_rows_and_bad_files_are_listed_and_skipped(
        clips: list[PanClip], tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    written = write_videos(tmp_path, clips[:9], "mp4")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "zero.mp4").write_bytes(b"")
    (tmp_path / "empty" / "corrupt.webm").write_bytes(b"\x1a\x45\xdf\xa3 not a video at all" * 40)
    first = sorted(written)[0]
    rows = [["gone/missing.mp4", "left", "3"], [first, "left", "3"], [sorted(written)[1] + "", "sideways", "3"],
            ["empty/zero.mp4", "up", "3"], ["empty/corrupt.webm", "90", "slow"]]
    labels = write_labels(tmp_path / "labels.csv", {k: v for k, v in written.items() if k != sorted(written)[1]}, rows)
    dataset = load_dataset(f"videos:{tmp_path}:labels={labels}:image_size={SIZE}")
    reasons = {s["record"]: s["reason"] for s in dataset.skipped}
    text = "\n".join(f"{k}: {v}" for k, v in reasons.items())
    assert len(dataset) == 8 and len(reasons) == 5, text
    assert "repeats the path of row 2" in reasons[f"labels.csv row 11 ({first})"]
    assert "'sideways' is neither" in reasons[f"labels.csv row 12 ({sorted(written)[1]})"]
    assert reasons["labels.csv: gone/missing.mp4"] == "file not found in the folder"
    assert reasons["empty/zero.mp4"] == "is empty (0 bytes)"
    assert reasons["empty/corrupt.webm"].startswith("cannot be decoded")
    printed = capfd.readouterr().err
    assert "skipped 5 record(s); using 8 clip(s)" in printed and "sideways" in printed and "Traceback" not in printed


def test_a_file_without_a_labels_row_is_listed(clips: list[PanClip], tmp_path: Path) -> None:
    written = write_videos(tmp_path, clips[:8], "mp4")
    unlabelled = sorted(written)[0]
    labels = write_labels(tmp_path / "labels.csv", {k: v for k, v in written.items() if k != unlabelled})
    dataset = load_dataset(f"videos:{tmp_path}:labels={labels}:image_size={SIZE}")
    assert dataset.skipped == [{"record": unlabelled, "reason": "has no row in labels.csv"}]


@pytest.mark.parametrize(("make", "words"), [
    (lambda d: None, ["holds no video files", ".mp4"]),
    (lambda d: [(d / f"s{k}").mkdir() or (d / f"s{k}" / "a.mp4").write_bytes(b"") for k in range(3)],
     ["no video", "could be used", "is empty (0 bytes)"]),
    (lambda d: [(d / "one").mkdir(), (d / "one" / "a.mp4").write_bytes(b"x"), (d / "one" / "b.mkv").write_bytes(b"x")],
     ["from 1 source(s)", "at least 3 sources"]),
])
def test_a_folder_without_usable_videos_is_refused(tmp_path: Path, make: Any, words: list[str]) -> None:
    make(tmp_path)
    with pytest.raises(UserInputError) as error:
        load_dataset(f"videos:{tmp_path}")
    assert all(w in str(error.value) for w in words), str(error.value)


def test_a_missing_folder_and_a_labels_file_without_path_are_refused(clips: list[PanClip], tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="is not a folder"):
        load_dataset(f"videos:{tmp_path / 'nowhere'}")
    write_videos(tmp_path, clips[:3], "mp4")
    bad = tmp_path / "labels.csv"
    with bad.open("w", newline="") as handle:
        csv.writer(handle).writerows([["file", "direction"], ["x.mp4", "left"]])
    with pytest.raises(UserInputError, match=r"has columns file, direction; expected path,direction\[,speed\]"):
        load_dataset(f"videos:{tmp_path}:labels={bad}")
    with pytest.raises(UserInputError, match="does not exist"):
        load_dataset(f"videos:{tmp_path}:labels={tmp_path / 'none.csv'}")


def test_extract_refuses_a_folder_of_broken_videos_before_any_work(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from stageprobe.cli import app

    for k in range(3):
        (tmp_path / "in" / f"s{k}").mkdir(parents=True)
        (tmp_path / "in" / f"s{k}" / "clip.mp4").write_bytes(b"\x00" * 64)
    result = CliRunner().invoke(app, ["extract", "-m", "pixels", "-d", f"videos:{tmp_path / 'in'}",
                                      "--out", str(tmp_path / "store")])
    assert result.exit_code == 2 and "could be used" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "store").exists()


def test_same_files_same_hash_and_no_second_decode(clips: list[PanClip], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The content hash covers the files' bytes; decoded clips come from the cache the second time,
    and a changed file is decoded again."""
    written = write_videos(tmp_path, clips[:6], "mp4")
    spec = f"videos:{tmp_path}:image_size={SIZE}:frames=4"
    first = load_dataset(spec)
    decoded: list[Path] = []
    real = decoding.decode_clip
    monkeypatch.setattr(decoding, "decode_clip", lambda path, sampling: decoded.append(path) or real(path, sampling))
    again = load_dataset(spec)
    assert decoded == [] and again.content_hash() == first.content_hash()
    np.testing.assert_array_equal(_shown(again[0]), _shown(first[0]))
    changed = sorted(written)[0]
    encode(tmp_path / changed, clips[7].frames, "mp4")
    after = load_dataset(spec)
    assert decoded == [tmp_path / changed] and after.content_hash() != first.content_hash()


def test_sampling_spreads_frames_or_follows_fps(clips: list[PanClip], tmp_path: Path) -> None:
    long = np.concatenate([clips[0].frames, clips[1].frames, clips[2].frames])  # 24 frames at 8 fps
    for k in range(3):
        encode(tmp_path / f"s{k}" / "long.mp4", long, "mp4")
    spread = load_dataset(f"videos:{tmp_path}:image_size={SIZE}:frames=4")[0].target
    assert spread["frame_indices"] == [3, 9, 15, 21]
    paced = load_dataset(f"videos:{tmp_path}:image_size={SIZE}:frames=4:fps=4")[0].target["frame_indices"]
    # 8 fps shown at 4 fps: every second frame, centred in the clip
    assert np.all(np.diff(paced) == 2) and abs(paced[0] + paced[-1] - 23) <= 1, paced
    with pytest.raises(UserInputError, match=r"lasts 24 frames at 8 fps; 4 frames at fps=0\.5 need 49"):
        load_dataset(f"videos:{tmp_path}:image_size={SIZE}:frames=4:fps=0.5")


@pytest.mark.parametrize(("text", "expected"), [("left", 4), ("UP-RIGHT", 1), ("0", 0), ("92", 2), ("-45", 7),
                                                ("359", 0), ("sideways", None), ("nan", None)])
def test_direction_names_and_angles(text: str, expected: int | None) -> None:
    assert parse_direction(text) == expected


def _token_flow_direction(run: Path) -> float:
    with (run / "metrics.csv").open() as handle:
        for row in csv.DictReader(handle):
            if (row["stage"], row["probe"], row["metric"], row["control"]) == (
                    "pixels.merged", "token-flow", "direction_acc", "none"):
                return float(row["value"])
    raise AssertionError(f"no token-flow direction_acc row at pixels.merged in {run / 'metrics.csv'}")


@pytest.mark.slow
def test_quick_study_on_videos_reads_direction_as_on_the_uncompressed_clips(tmp_path: Path) -> None:
    """`run --quick --model pixels --data motion=videos:DIR:labels=…` on 64 pans as mp4 and as lossless
    mp4: the study completes, and token-flow's direction accuracy at pixels.merged is ≥ 0.85 on the
    mp4 clips and within 0.1 of the lossless clips' (about 3 minutes each on 2 cores)."""
    import os
    import subprocess
    import sys

    clips = pan_clips(64, 224)
    scores = {}
    for encoding in ("mp4", "lossless"):
        folder = tmp_path / encoding
        write_labels(folder / "labels.csv", write_videos(folder, clips, encoding))
        run = tmp_path / f"run-{encoding}"
        command = [sys.executable, "-m", "stageprobe", "run", "--quick", "--model", "pixels", "--probe-workers", "1",
                   "--experiments", "e_q2_6", "--data", f"motion=videos:{folder}:labels={folder / 'labels.csv'}",
                   "--out", str(run)]
        done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy(), timeout=1800)
        assert done.returncode == 0, done.stderr[-3000:]
        scores[encoding] = _token_flow_direction(run)
    assert scores["mp4"] >= 0.85 and abs(scores["mp4"] - scores["lossless"]) <= 0.1, scores
