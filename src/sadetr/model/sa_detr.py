"""The SA-DETR module (paper 3.1-3.5): encoder -> Dual Path Query Initializer -> Span Aware Refine Decoder.

Owns the wiring and the output dict of CONTRACTS.md "Model". Noise queries (denoising) are added only in
training, when the model has a denoiser and `targets` are given; the losses are computed elsewhere.
It also exposes the retrieval bi-encoder a corpus index needs (`embed_video`, `embed_text`: L_vtc's
embeddings before fusion) and a fingerprint of the weights that decide them.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sadetr.model.decoder import SpanAwareRefineDecoder
from sadetr.model.denoising import SpanDenoiser
from sadetr.model.encoder import MultiModalAlignEncoder
from sadetr.model.query_init import DualPathQueryInitializer


class SADETR(nn.Module):
    """Span Aware DEtection TRansformer for moment retrieval and highlight detection."""

    def __init__(
        self,
        encoder: MultiModalAlignEncoder,
        query_init: DualPathQueryInitializer,
        decoder: SpanAwareRefineDecoder,
        denoiser: SpanDenoiser | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.query_init = query_init
        self.decoder = decoder
        self.denoiser = denoiser
        self.num_queries = query_init.num_queries

    @property
    def can_embed(self) -> bool:
        """Whether the model has query-independent video embeddings: L_vtc at `vtc_stage=before`."""
        return bool(self.encoder.use_vtc and self.encoder.vtc_stage == "before")

    def _check_embed(self) -> None:
        if not self.can_embed:
            raise ValueError(
                "no query-independent embedding: it needs L_vtc at vtc_stage=before (this model: "
                f"use_vtc={self.encoder.use_vtc}, vtc_stage={self.encoder.vtc_stage!r})"
            )

    def embed_video(self, video_feat: Tensor, video_mask: Tensor) -> Tensor:
        """L2-normalised L_vtc video embedding: video_feat [B, Lv, Dv], video_mask [B, Lv] -> [B, d]."""
        self._check_embed()
        return F.normalize(self.encoder.embed_video(video_feat, video_mask.bool()), dim=-1)

    def embed_text(self, text_feat: Tensor, text_mask: Tensor) -> Tensor:
        """L2-normalised L_vtc query embedding: text_feat [B, Lt, Dt], text_mask [B, Lt] -> [B, d]
        (a query whose projected tokens average to zero stays zero)."""
        self._check_embed()
        return F.normalize(self.encoder.embed_text(text_feat, text_mask.bool()), dim=-1)

    def embedding_fingerprint(self) -> str:
        """SHA-256 (hex) of what decides `embed_video`/`embed_text`: the stage and the parameters of the
        two input projections (names, shapes, dtypes, values). A corpus index records it and refuses a
        model whose embeddings differ from the ones it stores."""
        digest = hashlib.sha256(f"vtc_stage={self.encoder.vtc_stage}".encode())
        for prefix, module in (
            ("video_proj", self.encoder.video_proj),
            ("text_proj", self.encoder.text_proj),
        ):
            for name, tensor in sorted(module.state_dict().items()):
                value = tensor.detach().cpu().contiguous()
                digest.update(f"{prefix}.{name}:{value.dtype}:{tuple(value.shape)}".encode())
                digest.update(value.view(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def set_progress(self, progress: float) -> None:
        """Training progress in [0, 1], for the denoiser's curriculum schedule (Table 8)."""
        if self.denoiser is not None:
            self.denoiser.set_progress(progress)

    def forward(
        self,
        video_feat: Tensor,
        video_mask: Tensor,
        text_feat: Tensor,
        text_mask: Tensor,
        targets: list[Tensor] | None = None,
        dn_generator: torch.Generator | None = None,
    ) -> dict:
        """video_feat [B, Lv, Dv], video_mask [B, Lv], text_feat [B, Lt, Dt], text_mask [B, Lt];
        targets: list[B] of GT (center, width) [N_i, 2], used only for the noise group in training.
        """
        video_mask = video_mask.bool()
        text_mask = text_mask.bool()
        enc = self.encoder(video_feat, video_mask, text_feat, text_mask)
        anchors, content, init_spans = self.query_init.direct(enc.token)  # (B, Nq, 2), (B, Nq, d)

        dn = None
        if self.training and self.denoiser is not None and targets is not None:
            dn = self.denoiser(targets, self.num_queries, generator=dn_generator)
        self_attn_mask = None
        num_dn = 0
        if dn is not None:
            num_dn = dn.anchors.shape[1]
            anchors = torch.cat([anchors, dn.anchors.to(anchors.dtype)], dim=1)  # (B, Nq+N_dn, 2)
            noise_content = self.query_init.noise(content.shape[0], num_dn)  # (B, N_dn, d)
            content = torch.cat([content, noise_content.to(content.dtype)], dim=1)  # (B, Nq+N_dn, d)
            self_attn_mask = dn.attn_mask

        layers = self.decoder(content, anchors, enc.memory, video_mask, enc.sentence, self_attn_mask)
        nq = self.num_queries
        direct = [{"pred_spans": s[:, :nq], "pred_quality": q[:, :nq]} for s, q in layers]  # (B, Nq, ...)
        out = {
            "pred_spans": direct[-1]["pred_spans"],
            "pred_quality": direct[-1]["pred_quality"],
            "aux_outputs": direct[:-1],
            "init_spans": init_spans,
            "dn_outputs": None,
            "dn_meta": None,
            "saliency_scores": enc.saliency_scores,
            "saliency_scores_neg": enc.saliency_scores_neg,
            "video_mask": video_mask,
            "vtc": enc.vtc,
            "ctm": enc.ctm,
        }
        if dn is not None:
            out["dn_outputs"] = [{"pred_spans": s[:, nq:], "pred_quality": q[:, nq:]} for s, q in layers]
            out["dn_meta"] = dn.meta
        return out
