"""CLIP / SlowFast loading and feature extraction on tiny random backbones and painted videos.

Real weights are opt-in: SADETR_CLIP_DIR (a local openai/clip-vit-base-patch32 folder or ViT-B-32.pt)
and SADETR_SLOWFAST_CKPT (SLOWFAST_8x8_R50.pyth); those tests are skipped otherwise.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from sadetr.cli.main import main
from sadetr.core.errors import CheckpointError, DataError
from sadetr.video.clip import CLIP_VOCAB_SIZE, check_tokenizer, load_clip, load_tokenizer
from sadetr.video.extract import (
    FAILURE_LOG,
    VideoExtractor,
    extract_texts,
    extract_videos,
    list_videos,
    read_queries,
)
from sadetr.video.preprocess import CLIP_MEAN, CLIP_STD, normalize
from sadetr.video.sampling import slow_indices
from sadetr.video.slowfast import SlowFast, SlowFastConfig, load_slowfast
from sadetr.video.tiny import (
    TINY_VOCAB,
    full_size_merges,
    level,
    make_tiny_clip,
    tiny_slowfast_config,
    write_bpe_files,
    write_test_video,
)


def frame_index(frame: np.ndarray) -> int:
    return round((float(frame.mean()) - 5) / 5)


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory) -> Path:
    return make_tiny_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def clip(tiny_clip_dir):
    return load_clip(tiny_clip_dir, expected_vocab_size=TINY_VOCAB)


@pytest.fixture(scope="module")
def slowfast():
    torch.manual_seed(0)
    return SlowFast(tiny_slowfast_config()).eval()


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    # 5.0 s at 10 fps -> 3 clips of 2 s (the last one partial)
    return write_test_video(tmp_path_factory.mktemp("v") / "paint.mp4", n_frames=50, fps=10)


# ---------------------------------------------------------------- CLIP tokenizer and loading


def test_tokenizer_with_stub_vocabulary_is_refused(tiny_clip_dir):
    with pytest.raises(CheckpointError, match=f"{TINY_VOCAB} tokens, CLIP's BPE has {CLIP_VOCAB_SIZE}"):
        load_clip(tiny_clip_dir)  # default expects the real 49408-token BPE


def test_tokenizer_check_accepts_a_full_size_clip_vocabulary(tmp_path):
    # a real-format BPE with exactly CLIP's size: 512 byte symbols + 48894 merges + 2 specials
    merges = full_size_merges()
    assert write_bpe_files(tmp_path, merges) == CLIP_VOCAB_SIZE
    tokenizer = load_tokenizer(tmp_path)  # checks size and special ids, does not raise
    assert len(tokenizer) == CLIP_VOCAB_SIZE
    check_tokenizer(tokenizer, CLIP_VOCAB_SIZE)
    with pytest.raises(CheckpointError, match="tokens"):
        check_tokenizer(tokenizer, CLIP_VOCAB_SIZE + 1)


def test_tiny_clip_encodes_images_and_text(clip):
    assert clip.tokenizer.tokenize("the dog and the cat") == [
        "the</w>",
        "dog</w>",
        "and</w>",
        "the</w>",
        "cat</w>",
    ]
    feats = clip.encode_texts(["the dog", "a cat runs fast"])
    n_tokens = [
        len(clip.tokenizer("the dog")["input_ids"]),
        len(clip.tokenizer("a cat runs fast")["input_ids"]),
    ]
    assert [f["last_hidden_state"].shape for f in feats] == [(n, 64) for n in n_tokens]
    assert all(f["pooler_output"].shape == (16,) for f in feats)
    # pooler_output is the projected <|endoftext|> token (the last valid token)
    proj = clip.model.text_projection.weight.detach().numpy()
    eot = feats[1]["last_hidden_state"][-1]
    assert np.allclose(feats[1]["pooler_output"], proj @ eot, atol=1e-5)
    assert clip.encode_images(torch.randn(3, 3, 32, 32)).shape == (3, 16)


def _hf_to_openai(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenAI CLIP layout of a transformers CLIPModel state dict (the inverse of the loader's mapping)."""
    out = {
        "logit_scale": hf["logit_scale"],
        "text_projection": hf["text_projection.weight"].t().contiguous(),
        "visual.proj": hf["visual_projection.weight"].t().contiguous(),
        "token_embedding.weight": hf["text_model.embeddings.token_embedding.weight"],
        "positional_embedding": hf["text_model.embeddings.position_embedding.weight"],
        "ln_final.weight": hf["text_model.final_layer_norm.weight"],
        "ln_final.bias": hf["text_model.final_layer_norm.bias"],
        "visual.class_embedding": hf["vision_model.embeddings.class_embedding"],
        "visual.conv1.weight": hf["vision_model.embeddings.patch_embedding.weight"],
        "visual.positional_embedding": hf["vision_model.embeddings.position_embedding.weight"],
        "visual.ln_pre.weight": hf["vision_model.pre_layrnorm.weight"],
        "visual.ln_pre.bias": hf["vision_model.pre_layrnorm.bias"],
        "visual.ln_post.weight": hf["vision_model.post_layernorm.weight"],
        "visual.ln_post.bias": hf["vision_model.post_layernorm.bias"],
    }
    names = {
        "layer_norm1": "ln_1",
        "layer_norm2": "ln_2",
        "mlp.fc1": "mlp.c_fc",
        "mlp.fc2": "mlp.c_proj",
        "self_attn.out_proj": "attn.out_proj",
    }
    for hf_prefix, oa_prefix in (
        ("vision_model.encoder.layers.", "visual.transformer.resblocks."),
        ("text_model.encoder.layers.", "transformer.resblocks."),
    ):
        for i in range(2):
            src, dst = f"{hf_prefix}{i}.", f"{oa_prefix}{i}."
            for new, old in names.items():
                for leaf in ("weight", "bias"):
                    out[f"{dst}{old}.{leaf}"] = hf[f"{src}{new}.{leaf}"]
            for leaf in ("weight", "bias"):
                out[f"{dst}attn.in_proj_{leaf}"] = torch.cat(
                    [hf[f"{src}self_attn.{p}_proj.{leaf}"] for p in ("q", "k", "v")], dim=0
                )
    return out


def test_openai_checkpoint_round_trip_gives_the_same_features(tmp_path, clip):
    folder = tmp_path / "openai"
    write_bpe_files(folder)
    state = _hf_to_openai(clip.model.state_dict())
    torch.save(state, folder / "ViT-B-32.pt")
    loaded = load_clip(folder / "ViT-B-32.pt", expected_vocab_size=TINY_VOCAB)
    pixels = torch.randn(2, 3, 32, 32)
    assert torch.allclose(loaded.encode_images(pixels), clip.encode_images(pixels), atol=1e-5)
    a, b = loaded.encode_texts(["the cat"])[0], clip.encode_texts(["the cat"])[0]
    assert np.allclose(a["last_hidden_state"], b["last_hidden_state"], atol=1e-5)
    assert np.allclose(a["pooler_output"], b["pooler_output"], atol=1e-5)

    del state["visual.ln_post.bias"]
    torch.save(state, folder / "broken.pt")
    with pytest.raises(KeyError):
        load_clip(folder / "broken.pt", expected_vocab_size=TINY_VOCAB)


def test_missing_weights_name_the_file_and_where_to_get_them(tmp_path):
    with pytest.raises(CheckpointError, match="clip-vit-base-patch32") as err:
        load_clip(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value)
    with pytest.raises(CheckpointError, match=r"SLOWFAST_8x8_R50\.pyth"):
        load_slowfast(tmp_path / "sf.pyth")


# ---------------------------------------------------------------- SlowFast


def test_slowfast_r50_has_the_pytorchvideo_layout():
    model = SlowFast()
    keys = model.state_dict()
    assert model.cfg.feature_dim == 2304
    # a few keys and shapes of pytorchvideo's slowfast_r50 checkpoint
    assert keys["blocks.0.multipathway_blocks.0.conv.weight"].shape == (64, 3, 1, 7, 7)
    assert keys["blocks.0.multipathway_blocks.1.conv.weight"].shape == (8, 3, 5, 7, 7)
    assert keys["blocks.0.multipathway_fusion.conv_fast_to_slow.weight"].shape == (16, 8, 7, 1, 1)
    assert keys["blocks.1.multipathway_blocks.0.res_blocks.0.branch1_conv.weight"].shape == (256, 80, 1, 1, 1)
    assert keys["blocks.3.multipathway_blocks.0.res_blocks.5.branch2.conv_a.weight"].shape == (
        256,
        1024,
        3,
        1,
        1,
    )
    assert keys["blocks.4.multipathway_blocks.1.res_blocks.2.branch2.conv_c.weight"].shape == (
        256,
        64,
        1,
        1,
        1,
    )
    assert keys["blocks.6.proj.weight"].shape == (400, 2304)
    assert "blocks.4.multipathway_fusion.conv_fast_to_slow.weight" not in keys  # no fusion after res5
    n_params = sum(p.numel() for p in model.parameters())
    assert 34.0e6 < n_params < 35.0e6  # SlowFast R50 8x8: 34.5 M parameters


def test_slowfast_features_are_pooled_pathways(slowfast):
    fast = torch.randn(2, 3, 32, 32, 32)
    slow = fast[:, :, slow_indices()]
    feats = slowfast(slow, fast)
    assert feats.shape == (2, 288)
    # the fast part of the feature is the global mean of the fast res5 output
    x = [slow, fast]
    for block in slowfast.blocks[:-2]:
        x = block(x)
    assert torch.allclose(feats[:, 256:], x[1].mean(dim=(2, 3, 4)), atol=1e-6)
    assert torch.allclose(feats[:, :256], x[0].mean(dim=(2, 3, 4)), atol=1e-6)


def test_slowfast_checkpoint_round_trip_and_key_mismatch(tmp_path, slowfast):
    cfg = tiny_slowfast_config()
    state = slowfast.state_dict()
    torch.save({"model_state": state}, tmp_path / "sf.pyth")
    loaded = load_slowfast(tmp_path / "sf.pyth", cfg)
    fast = torch.randn(1, 3, 32, 32, 32)
    slow = fast[:, :, slow_indices()]
    assert torch.equal(loaded(slow, fast), slowfast(slow, fast))

    missing = {
        k: v
        for k, v in state.items()
        if k != "blocks.2.multipathway_blocks.0.res_blocks.0.branch2.conv_b.weight"
    }
    torch.save(missing, tmp_path / "missing.pyth")
    with pytest.raises(CheckpointError, match=r"1 missing \(blocks\.2\.multipathway_blocks\.0"):
        load_slowfast(tmp_path / "missing.pyth", cfg)
    torch.save({**state, "blocks.7.extra.weight": torch.zeros(1)}, tmp_path / "extra.pyth")
    with pytest.raises(CheckpointError, match=r"1 unexpected \(blocks\.7\.extra\.weight\)"):
        load_slowfast(tmp_path / "extra.pyth", cfg)
    with pytest.raises(CheckpointError, match=r"\d+ missing .*with another shape"):  # tiny is not an R50
        load_slowfast(tmp_path / "sf.pyth", SlowFastConfig())


# ---------------------------------------------------------------- extraction


def test_each_clip_sees_its_centre_frame_and_32_evenly_spaced_frames(clip, slowfast, video):
    ex = VideoExtractor(clip=clip, slowfast=slowfast, clip_len=2.0)
    per_clip = list(ex._clip_frames(video, 3, 5.0))
    assert len(per_clip) == 3
    # clip i centre = 2i + 1 s -> frame 10 (2i + 1); last clip centre clamped inside the video
    assert [frame_index(c) for c, _ in per_clip] == [10, 30, 49]
    fast0 = [frame_index(f) for f in per_clip[0][1]]
    assert fast0 == [math.floor((k + 0.5) / 16 * 10) for k in range(32)]  # 16 fps over [0, 2)
    fast2 = [frame_index(f) for f in per_clip[2][1]]
    assert fast2[:16] == [40 + math.floor((k + 0.5) / 16 * 10) for k in range(16)]
    assert fast2[16:] == [49] * 16  # past the end: the last frame


def test_extractor_features_match_the_backbones_on_the_sampled_frames(clip, slowfast, video):
    ex = VideoExtractor(clip=clip, slowfast=slowfast, clip_len=2.0, batch_clips=2)
    feats = ex.features(video)
    assert set(feats) == {"clip_features", "slowfast_features"}
    assert feats["clip_features"].shape == (3, 16) and feats["slowfast_features"].shape == (3, 288)
    assert feats["clip_features"].dtype == np.float32
    # clip 1's CLIP feature is CLIP of its centre frame (uniform gray level(30))
    frame = np.full((32, 32, 3), level(30), dtype=np.uint8)
    expected = clip.encode_images(normalize(frame[None], CLIP_MEAN, CLIP_STD))[0].numpy()
    assert np.allclose(feats["clip_features"][1], expected, atol=0.05 * np.abs(expected).max())


def test_batch_extraction_is_resumable_and_logs_unreadable_videos(tmp_path, clip, slowfast, video):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "good.mp4").write_bytes(video.read_bytes())
    (videos / "broken.mp4").write_bytes(b"not a video" * 50)
    (videos / "notes.txt").write_text("ignored")
    listed = list_videos(videos)
    assert [p.name for p in listed] == ["broken.mp4", "good.mp4"]
    out = tmp_path / "feats"
    ex = VideoExtractor(clip=clip, slowfast=slowfast)
    summary = extract_videos(listed, out, ex, progress=False)
    assert (summary.done, summary.failed, summary.skipped) == (1, 1, 0)
    with np.load(out / "clip_features" / "good.npz") as npz:
        assert npz.files == ["features"] and npz["features"].shape == (3, 16)
    with np.load(out / "slowfast_features" / "good.npz") as npz:
        assert npz["features"].shape == (3, 288)
    log_lines = (out / FAILURE_LOG).read_text().splitlines()
    assert len(log_lines) == 1 and log_lines[0].startswith(str(videos / "broken.mp4"))
    again = extract_videos(listed, out, ex, progress=False)
    assert (again.done, again.skipped, again.failed) == (0, 1, 1)
    assert not list(out.rglob("*.tmp")) and not list(out.rglob(".*.npz"))

    listing = tmp_path / "list.txt"
    listing.write_text("# my videos\nvideos/good.mp4\n\n")
    assert list_videos(listing) == [tmp_path / "videos" / "good.mp4"]
    with pytest.raises(DataError, match="no such video"):
        list_videos(tmp_path / "absent")


def test_text_extraction_writes_released_layout(tmp_path, clip):
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"qid": 7, "query": "the dog runs"}\n{"qid": 8, "query": "a cat"}\n')
    pairs = read_queries(queries)
    summary = extract_texts(pairs, tmp_path / "out", clip, batch_size=1, progress=False)
    assert summary.done == 2
    with np.load(tmp_path / "out" / "clip_text_features" / "qid7.npz") as npz:
        assert sorted(npz.files) == ["last_hidden_state", "pooler_output"]
        assert npz["last_hidden_state"].shape == (len(clip.tokenizer("the dog runs")["input_ids"]), 64)
        assert npz["pooler_output"].shape == (16,)
    assert extract_texts(pairs, tmp_path / "out", clip, progress=False).skipped == 2
    queries.write_text('{"qid": 7, "query": "ok"}\n{"qid": 9}\n')
    with pytest.raises(DataError, match=r"q\.jsonl:2: query: missing field"):
        read_queries(queries)


def test_cli_without_weights_exits_2_with_a_clear_message(tmp_path, video, capsys):
    code = main(
        ["extract", "--videos", str(video), "--out", str(tmp_path), "--slowfast", str(tmp_path / "x.pyth")]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "x.pyth" in err and "dl.fbaipublicfiles.com" in err
    assert main(["extract", "--videos", str(video), "--out", str(tmp_path)]) == 2


def test_cli_extract_and_extract_text_with_a_full_vocabulary_tiny_clip(tmp_path, video, capsys):
    clip_dir = make_tiny_clip(tmp_path / "clip", full_vocab=True)  # passes the real 49408-token check
    out = tmp_path / "feats"
    assert (
        main(
            ["extract", "--videos", str(video), "--out", str(out), "--clip", str(clip_dir), "--device", "cpu"]
        )
        == 0
    )
    with np.load(out / "clip_features" / "paint.npz") as npz:
        assert npz["features"].shape == (3, 16)
    assert not (out / "slowfast_features").exists()
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"qid": 3, "query": "abc"}\n')
    assert main(["extract-text", "--queries", str(queries), "--clip", str(clip_dir), "--out", str(out)]) == 0
    with np.load(out / "clip_text_features" / "qid3.npz") as npz:
        assert npz["last_hidden_state"].shape[1] == 64
    assert "1 done" in capsys.readouterr().err


# ---------------------------------------------------------------- real weights (opt-in)


@pytest.mark.skipif(not os.environ.get("SADETR_CLIP_DIR"), reason="set SADETR_CLIP_DIR to test real CLIP")
def test_real_clip_weights():
    clip = load_clip(os.environ["SADETR_CLIP_DIR"])
    assert len(clip.tokenizer) == CLIP_VOCAB_SIZE and clip.embed_dim == 512
    feats = clip.encode_texts(["a dog playing in the snow"])[0]
    assert feats["last_hidden_state"].shape[1] == 512 and feats["pooler_output"].shape == (512,)


@pytest.mark.skipif(not os.environ.get("SADETR_SLOWFAST_CKPT"), reason="set SADETR_SLOWFAST_CKPT")
def test_real_slowfast_weights():
    model = load_slowfast(os.environ["SADETR_SLOWFAST_CKPT"])
    fast = torch.zeros(1, 3, 32, 224, 224)
    assert model(fast[:, :, slow_indices()], fast).shape == (1, 2304)
