"""Typed configuration of the model (`ModelConfig`) and of its losses (`LossConfig`).

Defaults are the paper's full model at the QVHighlights SF+C/CLIP setting (Table 9, NOTES.md).
Every component of the paper is a flag here so that each ablation row (Tables 4-8, 10, 11) is a
config; `sadetr.model.presets` names those rows. Only `build_*` functions read these objects.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ModelConfig:
    """Architecture and component switches. Field comments give the paper's name for each."""

    name: str = "sa_detr"  # sa_detr | qd_detr | moment_detr
    video_dim: int = 2818  # SlowFast 2304 + CLIP 512 + TEF 2
    text_dim: int = 512  # CLIP last_hidden_state
    hidden_dim: int = 256  # d
    nheads: int = 8
    ffn_dim: int = 1024
    dropout: float = 0.1
    input_dropout: float = 0.5  # dropout on projected input features
    n_input_proj: int = 2  # (LayerNorm, Dropout, Linear, ReLU) blocks per input MLP
    n_fusion_layers: int = 2  # shared-parameter cross-attention fusion encoder
    n_global_layers: int = 2  # global enhance block (Transformer encoder)
    n_dec_layers: int = 2  # Span Aware Refine Decoder layers
    num_queries: int = 10  # N_q
    # Inference (3.5, NOTES.md): windows rounded to the clip grid, >= 1 clip wide (postprocess.py).
    round_to_clip: bool = True

    # Feature alignment (FA): L_vtc and L_ctm, and the stage (before/after fusion) of each (Table 7).
    use_vtc: bool = True
    vtc_stage: str = "before"  # before | after
    use_ctm: bool = True
    ctm_stage: str = "after"  # before | after

    # Local enhance block (conv 1-3-1); part of baseline (a), switchable for completeness.
    use_local_enhance: bool = True
    # Negative pass (each video with the next sample's query) for the saliency loss, as QD-DETR.
    use_negative_pass: bool = True

    # Query initialisation (QI, Table 5): instance-related anchors from M_g, or learnable anchors.
    anchor_init: str = "instance"  # instance | learnable
    use_init_loss: bool = True  # L_init on S_d (only with anchor_init=instance)

    # Span aware decoder (AD, Table 6).
    use_gaussian_mask: bool = True  # modulate cross-attention by the Gaussian mask (eq 5-6)
    gaussian_alpha: float = 2.0  # alpha
    use_span_enhance: bool = True  # Span Based Enhance Block (eq 2-3)
    num_align_points: int = 10  # N_s
    # Readings of eq 3, 4, 6 and of S_d (docs/model.md "Readings"); defaults: NOTES.md's unless marked.
    gaussian_mode: str = "logits"  # eq 6: logits (l ⊙ m, as written) | probs (l + log m = p ⊙ m renormalised)
    # Departure from NOTES.md (measured, docs/model.md "Readings"): raw positions cost late-epoch precision.
    position_mode: str = "projected"  # eq 4 P_Mv: projected (W_p·PE(t_i, 1/L_v)) | raw (sine of t_i)
    position_scale: str = "video"  # decoder's PE(S), P_Mv: video (2π over the video) | clip (1 rad per clip)
    # Departure from NOTES.md (measured, docs/model.md "Readings"): the unscaled 256-d gate saturates.
    gate_scale: bool = True  # eq 3: ĝ = sigmoid(⟨Ĉ, M̂_s⟩ / √d) (false: the unscaled dot product)
    anchor_offset: bool = False  # S_d = sigmoid(MLP_3(M_g) + o_q), o_q learnable, spread at init
    # 3.4's S^{i+1} = S^i + Δ: which anchors pass gradients. first (NOTES.md, DAB-DETR: S_d yes, S^i of
    # later layers detached) | none (S_d detached too, as DINO's two-stage proposals) | all (no detach).
    anchor_grad: str = "first"
    # Eq 4's positional query: plain (P_S = MLP_2(PE(S)), as eq 1; NOTES.md) | conditional (DAB-DETR, which
    # eq 4 cites: PE(S) ⊙ MLP(C^i) (1 at layer 1) ⊙ sigmoid(MLP(C^i)) / w; adds two MLPs).
    span_query: str = "plain"
    # A test of the gradient diagnosis (docs/model.md, sixth round), not a reading: the quality head reads
    # the content detached, so eq 8 and eq 9 train the head alone and leave the decoder and encoder to L_M.
    quality_detach: bool = False

    # Denoising (DN, Table 8, Figure 6).
    use_dn: bool = True
    num_dn_groups: int = 5  # N_n
    dn_negatives: bool = True  # contrastive negative groups
    dn_sigma_p: float = 0.2  # positive noise scale
    dn_sigma_n: float = 0.6  # negative noise scale
    dn_schedule: str = "fixed"  # fixed | curriculum (margin shrinks over training)
    dn_curriculum_min_margin: float = 0.1  # sigma_n - sigma_p at the end of training (curriculum)
    dn_noise_min_width: float = 0.0  # noise relative to max(w, this), a fraction of the video (0: w)
    dn_center_noise: str = "width"  # centre noise: width (NOTES.md: σw/2) | center (paper: σc/2)

    # --- baselines (Moment-DETR, QD-DETR; docs/baselines.md) ---
    max_text_len: int = 32  # rows of the learned text position table (public code's max_q_l)
    use_txt_pos: bool = False  # add learned positions to the text tokens (off in the public code)
    qd_activation: str = "prelu"  # FFN activation of QD-DETR's transformer (relu | prelu)
    qd_t2v_form: str = "public"  # QD-DETR T2V residual form: public (wjun0830/QD-DETR) | normed (earlier)
    qd_dynamic_anchor: bool = False  # Table 11: instance-related anchors from the global token
    qd_gaussian_mask: bool = False  # Table 11: Gaussian-mask-modulated cross-attention (eq 5-6)


@dataclass
class LossConfig:
    """Loss weights and margins (Table 9, eq 7-10, NOTES.md)."""

    l1: float = 10.0  # lambda_l1 (loss and matching cost)
    giou: float = 1.0  # lambda_giou (loss and matching cost)
    quality_matched_weight: float = 1.0  # w_q (eq 8)
    qmargin: float = 0.4  # delta_q (eq 9)
    lambda_align: float = 1.0  # lambda_A
    lambda_saliency: float = 1.0  # lambda_S
    lambda_moment: float = 1.0  # lambda_M
    lambda_quality: float = 1.0  # lambda_Q
    # Readings of eq 8-9 (docs/losses.md "Readings"). Departure from NOTES.md's mean over the (group, GT)
    # pairs (measured, docs/model.md "Third round"): eq 9's 1/N_gt over the batch's GT spans, summing the
    # N_n groups, ended 2.5 mAP higher over 3 seeds at full size.
    qmargin_reduction: str = "gt"  # eq 9: gt (Σ hinge / #GT) | pairs (Σ hinge / #(group, GT) pairs)
    # Departure from NOTES.md (measured, docs/losses.md "Readings"): BAM-DETR's balancing, which the
    # paper says eq 8 follows; the plain mean collapses q and leaves the top-1 unranked for epochs.
    quality_balance: str = "iou_bins"  # eq 8: iou_bins (BAM-DETR: per IoU bin) | none (mean over queries)
    quality_reduction: str = "mean"  # eq 8: mean over queries (NOTES.md) | sum (Σ_j: N_q × mean)
    ctm_scale: str = "mean"  # L_inter/L_intra: mean (NOTES.md) | univtg (both directions summed, as UniVTG)
    ctm_intra_negatives: str = "lower"  # L_intra: lower (less salient clips, UniVTG, NOTES.md) | irrelevant
    # Departure from NOTES.md's unweighted L_ctm (measured, docs/model.md "Seventh round"): UniVTG's own 0.1
    # on the two terms taken from it ended 7.7 mAP higher over 2 seeds at full size.
    ctm_univtg_weight: float = 0.1  # L_intra, L_inter weight in L_ctm (1: eq 10 as written, NOTES.md)
    aux_loss: bool = True  # moment/quality losses on every decoder layer
    saliency_margin: float = 0.2  # hinge margin of QD-DETR's margin ranking term
    rank_contrast_tau: float = 0.5  # temperature of QD-DETR's rank-contrastive term
    align_tau: float = 0.07  # tau of L_ctm terms; init temperature of L_vtc

    # --- baselines (Moment-DETR, QD-DETR; docs/baselines.md) ---
    label: float = 4.0  # weight of the foreground/background CE (public label_loss_coef)
    cost_label: float = 4.0  # foreground-probability matching cost (public set_cost_class)
    eos_coef: float = 0.1  # CE weight of the background class
