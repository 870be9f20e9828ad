"""From a folder of video files to clips: `sadetr index --videos DIR` (extraction first, resumable),
text queries through CLIP, `search --clips-out`, and the torchrun share of `sadetr extract`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sadetr.cli.commands.extract import rank_share
from sadetr.cli.main import main
from sadetr.inference.tiny import save_tiny_clip_checkpoint
from sadetr.video.tiny import make_tiny_clip, write_test_video


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(untrained SA-DETR on tiny CLIP features (16-d, 4-clip windows), tiny CLIP folder, video folder)."""
    root = tmp_path_factory.mktemp("videolib")
    save_tiny_clip_checkpoint(root / "m.ckpt", "data.max_v_l=4", "data.clip_len=1.0")
    videos = root / "videos"
    videos.mkdir()
    write_test_video(videos / "paint_a.mp4", n_frames=60, fps=10)  # 6 s -> 6 clips -> contexts 0, 2
    write_test_video(videos / "paint_b.mp4", n_frames=40, fps=10)  # 4 s -> one context
    return root / "m.ckpt", make_tiny_clip(root / "clip", full_vocab=True), videos


def test_index_a_video_folder_search_by_text_and_write_clips(library, tmp_path, capsys) -> None:
    ckpt, clip_dir, videos = library
    feats, idx = tmp_path / "feats", tmp_path / "idx"
    args = ["index", "--checkpoint", str(ckpt), "--videos", str(videos), "--features", str(feats)]
    args += ["--clip", str(clip_dir), "--out", str(idx), "--window", "2", "--stride", "2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "2 extracted" in out and "x real time" in out and "2 videos, 5 windows" in out
    assert sorted(p.name for p in (feats / "clip_features").iterdir()) == ["paint_a.npz", "paint_b.npz"]
    assert main(args) == 0  # rerun: nothing extracted again, nothing added
    assert "2 already there" in capsys.readouterr().out

    clips = tmp_path / "clips"
    search = ["search", "--index", str(idx), "--query", "the dog", "--clip", str(clip_dir), "--top", "2"]
    assert main([*search, "--format", "jsonl", "--clips-out", str(clips), "--video-root", str(videos)]) == 0
    hits = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(hits) == 2 and {h["video"] for h in hits} <= {"paint_a", "paint_b"}
    written = sorted(clips.glob("*.mp4"))
    assert [p.name for p in written] == [f"{i + 1:03d}_{h['video']}.mp4" for i, h in enumerate(hits)]


def test_torchrun_ranks_split_the_video_list_without_overlap() -> None:
    videos = [f"v{i}" for i in range(10)]
    shares = [rank_share(videos, {"RANK": str(r), "WORLD_SIZE": "3"}) for r in range(3)]
    assert sorted(v for s in shares for v in s) == videos
    assert [len(s) for s in shares] == [4, 3, 3]
    assert rank_share(videos, {}) == videos
