"""Tiny random stand-ins for the real backbones and videos, for tests and offline demos.

`make_tiny_clip` writes a real-format CLIP folder (transformers config + weights + a BPE
tokenizer with a small vocabulary, so it must be loaded with `expected_vocab_size=TINY_VOCAB`);
`tiny_slowfast_config` is SlowFast with the R50 topology but narrow and shallow;
`write_test_video` encodes a video whose frame k is painted with gray level `level(k)`, so that a
test can tell which frame a sampler picked. `TINY_CLIP_VIDEO_DIM` is the tiny CLIP's image feature width
(`sadetr.inference.tiny.save_tiny_clip_checkpoint` writes a checkpoint for it).
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np

from sadetr.video.clip import CLIP_VOCAB_SIZE, bytes_to_unicode
from sadetr.video.slowfast import SlowFastConfig

TINY_MERGES = ("t h", "th e</w>", "a n", "an d</w>", "d o", "do g</w>", "c a", "ca t</w>", "r u", "ru n</w>")
TINY_VOCAB = 512 + len(TINY_MERGES) + 2


def write_bpe_files(folder: Path, merges: tuple[str, ...] | list[str] = TINY_MERGES) -> int:
    """CLIP-format `vocab.json` + `merges.txt` (bytes, bytes</w>, merges, specials); returns vocab size."""
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return len(vocab)


def full_size_merges() -> list[str]:
    """48894 synthetic merges over ASCII letters: with them a BPE has exactly CLIP's 49408 tokens."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [
        chr(c) for c in range(ord("A"), ord("Z") + 1)
    ]
    pairs = [f"{a} {b}" for a in letters for b in letters]  # 2704 two-letter tokens
    triples = [f"{a}{b} {c}" for a in letters for b in letters for c in letters]  # then three-letter ones
    return (pairs + triples)[: CLIP_VOCAB_SIZE - 514]


def make_tiny_clip(
    folder: str | Path, seed: int = 0, embed_dim: int = 16, full_vocab: bool = False, text_width: int = 64
) -> Path:
    """Save a random tiny CLIP (ViT, width 64, image 32, patch 16) with a CLIP-format tokenizer into `folder`.

    `text_width` (a multiple of 64) is the text tower's width, i.e. the width of `last_hidden_state`
    (512 in the real ViT-B/32, which released Moment-DETR/QD-DETR checkpoints expect).

    With `full_vocab` the tokenizer has CLIP's 49408 tokens (synthetic merges), so the folder loads
    with the default, real-vocabulary check (e.g. through the command line); else TINY_VOCAB tokens.
    """
    import torch
    from transformers import CLIPConfig, CLIPModel

    folder = Path(folder)
    vocab = write_bpe_files(folder, full_size_merges() if full_vocab else TINY_MERGES)
    config = CLIPConfig(
        text_config=dict(
            hidden_size=text_width,  # heads of 64 dims: OpenAI's layout implies heads = width // 64
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=text_width // 64,
            vocab_size=vocab,
            max_position_embeddings=32,
            hidden_act="quick_gelu",
            bos_token_id=vocab - 2,
            eos_token_id=vocab - 1,
            pad_token_id=vocab - 1,
        ),
        vision_config=dict(
            hidden_size=64,  # one head of 64 dims: OpenAI's layout implies heads = width // 64
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=1,
            image_size=32,
            patch_size=16,
            hidden_act="quick_gelu",
        ),
        projection_dim=embed_dim,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(str(folder))
    return folder


def tiny_slowfast_config() -> SlowFastConfig:
    """R50 topology at 1/8 width and one block per stage: features 256 + 32 = 288 dims."""
    return SlowFastConfig(stem_dim=8, beta_inv=8, depths=(1, 1, 1, 1), num_classes=5)


def level(k: int) -> int:
    """Gray level painted into frame k (distinguishable after lossy encoding for k < 50)."""
    return 5 * k + 5


def write_test_video(
    path: str | Path, n_frames: int, fps: int = 10, width: int = 64, height: int = 48
) -> Path:
    """Encode an MPEG-4 video whose frame k is uniformly `level(k % 50)` gray."""
    import av

    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.qscale = True
        stream.options = {"qscale": "1"}
        for k in range(n_frames):
            pixels = np.full((height, width, 3), level(k % 50), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


TINY_CLIP_VIDEO_DIM = 16  # the tiny CLIP's image embedding width (make_tiny_clip)
