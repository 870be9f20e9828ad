"""CLIP image and text encoders, loaded offline from a local folder or from OpenAI's `ViT-B-32.pt`.

Image features: the projected image embedding (`visual_projection(pooler_output)`, 512-d for
ViT-B/32), one per clip, as the released QVHighlights `clip_features`. Text features, as the
released `clip_text_features/qid*.npz` (Moment-DETR's modified `encode_text`):
`last_hidden_state` [L_t, 512] = the text transformer's tokens after the final LayerNorm, all valid
tokens including <|startoftext|> and <|endoftext|>, and `pooler_output` [512] = the <|endoftext|>
token projected by `text_projection` (CLIP's sentence embedding).

The tokenizer must be CLIP's real BPE (49408 tokens). A tokenizer that loads "successfully" with a
small stub vocabulary (a broken offline cache) would silently produce garbage features, so its
size is checked and a wrong one refused.
"""

from __future__ import annotations

import gzip
import json
import pickle
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sadetr.core.errors import CheckpointError
from sadetr.core.safe_load import load_weights, refused_global

if TYPE_CHECKING:
    from transformers import CLIPModel, CLIPTokenizer

CLIP_VOCAB_SIZE = 49408
CLIP_HF_URL = "https://huggingface.co/openai/clip-vit-base-patch32"
CLIP_OPENAI_URL = "https://github.com/openai/CLIP (the ViT-B/32 URL in clip/clip.py's _MODELS)"
BPE_GZ = "bpe_simple_vocab_16e6.txt.gz"
MISSING_HINT = (
    "sadetr never downloads weights; pass --clip a local folder with config.json, the weights and "
    f"the tokenizer files (vocab.json, merges.txt) of openai/clip-vit-base-patch32 ({CLIP_HF_URL}), "
    f"or OpenAI's ViT-B-32.pt ({CLIP_OPENAI_URL}) with vocab.json + merges.txt or {BPE_GZ} "
    "(from github.com/openai/CLIP, clip/) in the same folder"
)


def check_tokenizer(tokenizer, expected_vocab_size: int = CLIP_VOCAB_SIZE, source: str = "") -> None:
    """Refuse a tokenizer whose vocabulary is not CLIP's BPE (size and special-token ids)."""
    size = len(tokenizer)
    where = f"{source}: " if source else ""
    if size != expected_vocab_size:
        raise CheckpointError(
            f"{where}CLIP tokenizer has {size} tokens, CLIP's BPE has {expected_vocab_size}; the tokenizer "
            "files are a stub or belong to another model (an offline fallback to a tiny vocabulary?) "
            + MISSING_HINT
        )
    bos, eos = tokenizer.convert_tokens_to_ids(["<|startoftext|>", "<|endoftext|>"])
    if (bos, eos) != (expected_vocab_size - 2, expected_vocab_size - 1):
        raise CheckpointError(
            f"{where}CLIP tokenizer's special tokens have ids {(bos, eos)}, expected "
            f"{(expected_vocab_size - 2, expected_vocab_size - 1)}"
        )


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable character table (printable bytes map to themselves)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for byte in range(256):
        if byte in keep:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


def bpe_gz_to_files(bpe_gz: Path, out_dir: Path) -> None:
    """Write HF `vocab.json` + `merges.txt` from OpenAI's `bpe_simple_vocab_16e6.txt.gz` (same ids)."""
    with gzip.open(bpe_gz, "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    merges = lines[1 : CLIP_VOCAB_SIZE - 256 - 256 - 2 + 1]  # 48894 merges after the header line
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (out_dir / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}), encoding="utf-8")
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


def load_tokenizer(folder: Path, expected_vocab_size: int = CLIP_VOCAB_SIZE):
    """CLIP tokenizer from `folder` (HF files, or OpenAI's BPE .gz converted on the fly), checked."""
    from transformers import CLIPTokenizer

    try:
        if not (folder / "vocab.json").is_file() and (folder / BPE_GZ).is_file():
            with tempfile.TemporaryDirectory() as tmp:
                bpe_gz_to_files(folder / BPE_GZ, Path(tmp))
                tokenizer = CLIPTokenizer(
                    vocab_file=str(Path(tmp) / "vocab.json"), merges_file=str(Path(tmp) / "merges.txt")
                )
        elif (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
            tokenizer = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
        else:
            raise CheckpointError(f"no CLIP tokenizer files in {folder}. " + MISSING_HINT)
    except CheckpointError:
        raise
    except Exception as err:  # a corrupt vocab.json / merges.txt / .gz: many exception types
        first = (str(err).strip().splitlines() or [""])[0][:200]
        why = f"{type(err).__name__}: {first}"
        raise CheckpointError(f"{folder}: unreadable CLIP tokenizer files ({why})") from None
    check_tokenizer(tokenizer, expected_vocab_size, str(folder))
    return tokenizer


def _count_layers(state: dict, prefix: str) -> int:
    return len({k[len(prefix) :].split(".")[0] for k in state if k.startswith(prefix)})


def openai_to_hf(state: dict[str, torch.Tensor]):
    """Map an OpenAI CLIP (ViT) state dict to transformers' `CLIPModel` layout; returns (config, state)."""
    from transformers import CLIPConfig

    if "visual.conv1.weight" not in state or "visual.proj" not in state:
        raise CheckpointError(
            "not an OpenAI CLIP ViT checkpoint (visual.conv1.weight / visual.proj missing; "
            "ResNet CLIP variants are not supported)"
        )
    v_width, _, patch, _ = state["visual.conv1.weight"].shape
    grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    t_width = state["ln_final.weight"].shape[0]
    config = CLIPConfig(
        vision_config=dict(
            hidden_size=v_width,
            intermediate_size=state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
            num_hidden_layers=_count_layers(state, "visual.transformer.resblocks."),
            num_attention_heads=v_width // 64,
            image_size=patch * grid,
            patch_size=patch,
            hidden_act="quick_gelu",
        ),
        text_config=dict(
            hidden_size=t_width,
            intermediate_size=state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
            num_hidden_layers=_count_layers(state, "transformer.resblocks."),
            num_attention_heads=t_width // 64,
            vocab_size=state["token_embedding.weight"].shape[0],
            max_position_embeddings=state["positional_embedding"].shape[0],
            hidden_act="quick_gelu",
            # <|startoftext|>, <|endoftext|> are the last two ids; the pooler reads the <|endoftext|> token
            bos_token_id=state["token_embedding.weight"].shape[0] - 2,
            eos_token_id=state["token_embedding.weight"].shape[0] - 1,
            pad_token_id=state["token_embedding.weight"].shape[0] - 1,
        ),
        projection_dim=state["text_projection"].shape[1],
    )
    out: dict[str, torch.Tensor] = {
        "logit_scale": state["logit_scale"],
        "text_projection.weight": state["text_projection"].t(),  # x @ P  ==  Linear(weight=P^T)
        "visual_projection.weight": state["visual.proj"].t(),
        "text_model.embeddings.token_embedding.weight": state["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": state["positional_embedding"],
        "text_model.final_layer_norm.weight": state["ln_final.weight"],
        "text_model.final_layer_norm.bias": state["ln_final.bias"],
        "vision_model.embeddings.class_embedding": state["visual.class_embedding"],
        "vision_model.embeddings.patch_embedding.weight": state["visual.conv1.weight"],
        "vision_model.embeddings.position_embedding.weight": state["visual.positional_embedding"],
        "vision_model.pre_layrnorm.weight": state["visual.ln_pre.weight"],  # sic: HF's spelling
        "vision_model.pre_layrnorm.bias": state["visual.ln_pre.bias"],
        "vision_model.post_layernorm.weight": state["visual.ln_post.weight"],
        "vision_model.post_layernorm.bias": state["visual.ln_post.bias"],
    }
    renames = {
        "ln_1": "layer_norm1",
        "ln_2": "layer_norm2",
        "mlp.c_fc": "mlp.fc1",
        "mlp.c_proj": "mlp.fc2",
        "attn.out_proj": "self_attn.out_proj",
    }
    for src_prefix, dst_prefix in (
        ("visual.transformer.resblocks.", "vision_model.encoder.layers."),
        ("transformer.resblocks.", "text_model.encoder.layers."),
    ):
        for i in range(_count_layers(state, src_prefix)):
            src, dst = f"{src_prefix}{i}.", f"{dst_prefix}{i}."
            for old, new in renames.items():
                for leaf in ("weight", "bias"):
                    out[f"{dst}{new}.{leaf}"] = state[f"{src}{old}.{leaf}"]
            for leaf in ("weight", "bias"):
                q, k, v = state[f"{src}attn.in_proj_{leaf}"].chunk(3, dim=0)  # [3W, ...] -> 3 x [W, ...]
                out[f"{dst}self_attn.q_proj.{leaf}"] = q
                out[f"{dst}self_attn.k_proj.{leaf}"] = k
                out[f"{dst}self_attn.v_proj.{leaf}"] = v
    used = {"input_resolution", "context_length", "vocab_size"}  # TorchScript scalars, not weights
    known_prefixes = ("visual.transformer.resblocks.", "transformer.resblocks.")
    stray = [
        k for k in state if k not in used and not k.startswith(known_prefixes) and k not in _OPENAI_TOP_LEVEL
    ]
    if stray:
        raise CheckpointError(f"unexpected keys in the OpenAI CLIP checkpoint: {stray[:5]}")
    return config, out


_OPENAI_TOP_LEVEL = {
    "logit_scale",
    "text_projection",
    "visual.proj",
    "token_embedding.weight",
    "positional_embedding",
    "ln_final.weight",
    "ln_final.bias",
    "visual.class_embedding",
    "visual.conv1.weight",
    "visual.positional_embedding",
    "visual.ln_pre.weight",
    "visual.ln_pre.bias",
    "visual.ln_post.weight",
    "visual.ln_post.bias",
}


@dataclass
class ClipBackbone:
    """A loaded CLIP model and its checked tokenizer; encodes frames and queries."""

    model: CLIPModel  # eval mode
    tokenizer: CLIPTokenizer
    source: str

    @property
    def image_size(self) -> int:
        return int(self.model.config.vision_config.image_size)

    @property
    def embed_dim(self) -> int:
        return int(self.model.config.projection_dim)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised pixels [N, 3, S, S] -> projected image embeddings [N, projection_dim]."""
        out = self.model.vision_model(pixel_values=pixels.to(self.device))
        return self.model.visual_projection(out.pooler_output).float().cpu()

    @torch.no_grad()
    def encode_texts(self, queries: list[str], max_tokens: int = 77) -> list[dict[str, np.ndarray]]:
        """Per query: `last_hidden_state` [L_t, width] (valid tokens) and `pooler_output` [projection_dim]."""
        max_tokens = min(max_tokens, int(self.model.config.text_config.max_position_embeddings))
        batch = self.tokenizer(
            queries, padding=True, truncation=True, max_length=max_tokens, return_tensors="pt"
        )
        ids, mask = batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)
        out = self.model.text_model(input_ids=ids, attention_mask=mask)
        pooled = self.model.text_projection(out.pooler_output).float().cpu().numpy()  # [B, proj]
        hidden = out.last_hidden_state.float().cpu().numpy()  # [B, L, width]
        lengths = mask.sum(dim=1).tolist()
        return [
            {"last_hidden_state": hidden[i, : lengths[i]], "pooler_output": pooled[i]}
            for i in range(len(queries))
        ]


def load_clip(
    path: str | Path, device: str | torch.device = "cpu", expected_vocab_size: int = CLIP_VOCAB_SIZE
) -> ClipBackbone:
    """CLIP from a local transformers folder or an OpenAI `.pt` file; never touches the network."""
    from transformers import CLIPModel

    path = Path(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CheckpointError(f"{path} has no config.json. " + MISSING_HINT)
        tokenizer = load_tokenizer(path, expected_vocab_size)
        model = _from_pretrained(CLIPModel, path)
    elif path.is_file():
        tokenizer = load_tokenizer(path.parent, expected_vocab_size)
        state = _read_openai_state(path)
        config, hf_state = openai_to_hf(state)
        model = CLIPModel(config)
        expected = {k for k in model.state_dict() if not k.endswith("position_ids")}
        missing = sorted(expected - set(hf_state))
        if missing:
            raise CheckpointError(f"{path}: CLIP weights missing after key mapping: {missing[:5]}")
        model.load_state_dict(hf_state, strict=False)
    else:
        raise CheckpointError(f"CLIP weights not found at {path}. " + MISSING_HINT)
    vocab = int(model.config.text_config.vocab_size)
    if vocab != len(tokenizer):
        raise CheckpointError(
            f"{path}: CLIP text model has {vocab} token embeddings, tokenizer {len(tokenizer)}"
        )
    return ClipBackbone(model.eval().to(device), tokenizer, str(path))


def _from_pretrained(model_class: Any, path: Path) -> Any:
    """`from_pretrained` of a local folder; transformers reads `pytorch_model.bin` with
    `weights_only=True`, so a crafted one is refused: every failure becomes one `CheckpointError`."""
    try:
        return model_class.from_pretrained(str(path), local_files_only=True)
    except pickle.UnpicklingError as err:
        refused = refused_global(err) or "pickle content other than tensors and plain values"
        weights = path / "pytorch_model.bin" if (path / "pytorch_model.bin").is_file() else path
        raise CheckpointError(
            f"{weights}: refused to load these CLIP weights: they refer to {refused}, which is neither a "
            "tensor nor a plain value; weight files are only read as weights, since anything else could "
            "run code"
        ) from None
    except Exception as err:  # truncated safetensors, bad config.json, ...: many exception types
        first = (str(err).strip().splitlines() or [""])[0][:200]
        if "weights_only" in first:  # torch's advice to load unsafely is never passed on
            first = "not a plain weights file"
        raise CheckpointError(
            f"{path}: cannot load CLIP ({type(err).__name__}: {first}). " + MISSING_HINT
        ) from None


def _read_openai_state(path: Path) -> dict[str, torch.Tensor]:
    """State dict of OpenAI's TorchScript archive, or of a plain `torch.save`d state dict.

    `torch.jit.load` runs no Python code from the file (its unpickler rebuilds TorchScript types
    only, though the archive's TorchScript runs); anything that is not a TorchScript archive is read
    with `weights_only=True`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, still reads it
            return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
    except Exception:  # not a TorchScript archive (or a broken one): read it as plain weights below
        pass
    state = load_weights(path, "CLIP checkpoint")  # weights_only: a crafted file cannot run code
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a CLIP state dict")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
