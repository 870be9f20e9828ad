"""Typed configuration of the model (`ModelConfig`) and of its losses (`LossConfig`).

The defaults are the `paper` recipe (`sadetr.config.recipes`): every equation as the paper writes it and
the weights of Table 9's QVHighlights row; where the paper is ambiguous or has a typo, the resolution of
docs/readings.md. Every component of the paper is a flag here so that each ablation row (Tables 4-8,
10, 11) is a config (`sadetr.config.presets`), and every reading that a recipe chooses is a flag too.
Only `build_*` functions read these objects.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ModelConfig:
    """Architecture and component switches. Field comments give the paper's name for each."""

    name: str = "sa_detr"  # sa_detr | qd_detr | moment_detr
    # The recipe this config was composed from (paper | tuned, `sadetr.config.recipes`); its readings are
    # the fields below. Metadata: no builder reads it.
    recipe: str = "paper"
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
    # Inference: the field's evaluation protocol, not a reading of the model (docs/readings.md "3.5"):
    # windows rounded to the clip grid, >= 1 clip wide (postprocess.py). On in every recipe.
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
    # Readings of eq 1 and 3-6 (docs/readings.md): the paper's form by default, the other a recipe's choice.
    self_attn_pos: str = "after_proj"  # eq 1: after_proj ((W_q C + P_S)(W_k C + P_S)ᵀ) | before_proj
    gate_scale: bool = False  # eq 3: ĝ = sigmoid(⟨Ĉ, M̂_s⟩) as written (true: divided by √d)
    position_mode: str = "raw"  # eq 4 P_Mv: raw (PE of the clip centres) | projected (W_p·PE(t_i, 1/L_v))
    mask_clip_time: str = "end"  # eq 5's clip time: end (i/L_v, i = 1..L_v) | center ((i − ½)/L_v)
    gaussian_mode: str = "logits"  # eq 6: logits (map ⊙ mask) | probs (softmax(map)·mask, renormalised)
    cross_residual: str = "query"  # eq 6's residual: query (+ Q_C̄ = W_q C̄) | input (+ C̄)
    # 3.4's S^{i+1} = S^i + Δ (offsets in logit space): which anchors pass gradients between layers.
    # first (DAB-DETR: S_d yes, later S^i detached) | none (S_d detached too) | all (no stop-gradient)
    anchor_grad: str = "first"

    # Denoising (DN, Table 8, Figure 6).
    use_dn: bool = True
    num_dn_groups: int = 5  # N_n
    dn_negatives: bool = True  # contrastive negative groups
    dn_sigma_p: float = 0.2  # positive noise scale
    dn_sigma_n: float = 0.6  # negative noise scale
    dn_schedule: str = "fixed"  # fixed | curriculum (margin shrinks over training)
    dn_curriculum_min_margin: float = 0.1  # sigma_n - sigma_p at the end of training (curriculum)
    dn_center_noise: str = "width"  # centre noise: width (|Δc| ≤ σw/2, 3.3's typo fixed) | center (σc/2)

    # --- baselines (Moment-DETR, QD-DETR; docs/baselines.md) ---
    max_text_len: int = 32  # rows of the learned text position table (public code's max_q_l)
    use_txt_pos: bool = False  # add learned positions to the text tokens (off in the public code)
    qd_activation: str = "prelu"  # FFN activation of QD-DETR's transformer (relu | prelu)
    qd_t2v_form: str = "public"  # QD-DETR T2V residual form: public (wjun0830/QD-DETR) | normed (earlier)
    qd_dynamic_anchor: bool = False  # Table 11: instance-related anchors from the global token
    qd_gaussian_mask: bool = False  # Table 11: Gaussian-mask-modulated cross-attention (eq 5-6)


@dataclass
class LossConfig:
    """Loss weights and margins (Table 9, eq 7-10) and the readings of eq 8-9 (docs/readings.md)."""

    l1: float = 10.0  # lambda_l1 (loss and matching cost)
    giou: float = 1.0  # lambda_giou (loss and matching cost)
    quality_matched_weight: float = 1.0  # w_q (eq 8)
    qmargin: float = 0.4  # delta_q (eq 9)
    lambda_align: float = 1.0  # lambda_A
    lambda_saliency: float = 1.0  # lambda_S
    lambda_moment: float = 1.0  # lambda_M
    lambda_quality: float = 1.0  # lambda_Q
    # The noise groups in L_noise (eq 7 "in the same way") and eq 9 (1/N_gt, "the count of GT spans"):
    # gt (Σ over groups and GT / #GT spans) | pairs (Σ / #(group, GT) pairs, DN-DETR's mean over groups).
    noise_reduction: str = "gt"  # L_noise
    qmargin_reduction: str = "gt"  # eq 9
    quality_balance: str = "none"  # eq 8: none (mean over queries) | iou_bins (BAM-DETR's code: per IoU bin)
    ctm_univtg_weight: float = 1.0  # weight of L_intra, L_inter within L_ctm (1: L_ctm = Σ as written)
    aux_loss: bool = True  # moment/quality losses on every decoder layer
    saliency_margin: float = 0.2  # hinge margin of QD-DETR's margin ranking term
    rank_contrast_tau: float = 0.5  # temperature of QD-DETR's rank-contrastive term
    align_tau: float = 0.07  # tau of L_ctm terms; init temperature of L_vtc

    # --- baselines (Moment-DETR, QD-DETR; docs/baselines.md) ---
    label: float = 4.0  # weight of the foreground/background CE (public label_loss_coef)
    cost_label: float = 4.0  # foreground-probability matching cost (public set_cost_class)
    eos_coef: float = 0.1  # CE weight of the background class
