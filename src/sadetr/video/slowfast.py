"""SlowFast R50 8x8 in plain PyTorch, with pytorchvideo's `slowfast_r50` state-dict layout.

Module names mirror pytorchvideo's `create_slowfast` so that the released Kinetics-400 checkpoint
(`SLOWFAST_8x8_R50.pyth`, key `model_state`) loads with strict key matching:
`blocks.0` stems (+ fast-to-slow fusion), `blocks.1-4` residual stages res2-res5 (fusion after
res2-res4), `blocks.5` pooling + concat (no weights), `blocks.6.proj` the classifier.
Features are the head input: global average pool of slow (2048) and fast (256) res5 outputs,
concatenated to 2304 dims, as the HERO/Moment-DETR extractor stores them. The classifier is kept
only so that the checkpoint's keys match; it is never run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sadetr.core.errors import CheckpointError, state_mismatch
from sadetr.core.safe_load import load_weights

SLOWFAST_URL = "https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics/SLOWFAST_8x8_R50.pyth"


@dataclass(frozen=True)
class SlowFastConfig:
    """Widths and depths; defaults are R50 8x8 (beta = 1/8, fusion ratio 2, fusion kernel 7)."""

    stem_dim: int = 64  # slow stem width; fast is stem_dim // beta_inv
    beta_inv: int = 8  # channel ratio slow/fast
    fusion_ratio: int = 2  # fast-to-slow fusion conv widens fast channels by this
    fusion_kernel: int = 7  # temporal kernel of the fusion conv
    alpha: int = 4  # temporal stride of the fusion conv (frame-rate ratio)
    depths: tuple[int, ...] = (3, 4, 6, 3)  # res2..res5 blocks
    num_classes: int = 400

    @property
    def feature_dim(self) -> int:
        """Slow res5 width + fast res5 width (2048 + 256 = 2304 for R50)."""
        slow_out = self.stem_dim * 4 * 2 ** (len(self.depths) - 1)
        return slow_out + slow_out // self.beta_inv


class BasicStem(nn.Module):
    """conv (k x 7 x 7, stride 1,2,2) -> BN -> ReLU -> max pool (1 x 3 x 3, stride 1,2,2)."""

    def __init__(self, dim_out: int, temporal_kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(
            3, dim_out, (temporal_kernel, 7, 7), (1, 2, 2), (temporal_kernel // 2, 3, 3), bias=False
        )
        self.norm = nn.BatchNorm3d(dim_out)
        self.activation = nn.ReLU()
        self.pool = nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.activation(self.norm(self.conv(x))))


class Bottleneck(nn.Module):
    """conv_a (k_t x 1 x 1) -> conv_b (1 x 3 x 3, spatial stride) -> conv_c (1 x 1 x 1), BN after each."""

    def __init__(self, dim_in: int, dim_inner: int, dim_out: int, temporal_kernel: int, stride: int) -> None:
        super().__init__()
        self.conv_a = nn.Conv3d(
            dim_in, dim_inner, (temporal_kernel, 1, 1), 1, (temporal_kernel // 2, 0, 0), bias=False
        )
        self.norm_a = nn.BatchNorm3d(dim_inner)
        self.act_a = nn.ReLU()
        self.conv_b = nn.Conv3d(dim_inner, dim_inner, (1, 3, 3), (1, stride, stride), (0, 1, 1), bias=False)
        self.norm_b = nn.BatchNorm3d(dim_inner)
        self.act_b = nn.ReLU()
        self.conv_c = nn.Conv3d(dim_inner, dim_out, 1, bias=False)
        self.norm_c = nn.BatchNorm3d(dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act_a(self.norm_a(self.conv_a(x)))
        x = self.act_b(self.norm_b(self.conv_b(x)))
        return self.norm_c(self.conv_c(x))


class ResBlock(nn.Module):
    """relu(branch1(x) + branch2(x)); branch1 is a 1x1x1 projection when shape changes, else identity."""

    def __init__(self, dim_in: int, dim_inner: int, dim_out: int, temporal_kernel: int, stride: int) -> None:
        super().__init__()
        self.branch1_conv: nn.Module | None = None
        self.branch1_norm: nn.Module | None = None
        if dim_in != dim_out or stride != 1:
            self.branch1_conv = nn.Conv3d(dim_in, dim_out, 1, (1, stride, stride), bias=False)
            self.branch1_norm = nn.BatchNorm3d(dim_out)
        self.branch2 = Bottleneck(dim_in, dim_inner, dim_out, temporal_kernel, stride)
        self.activation = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = (
            x
            if self.branch1_conv is None or self.branch1_norm is None
            else self.branch1_norm(self.branch1_conv(x))
        )
        return self.activation(shortcut + self.branch2(x))


class ResStage(nn.Module):
    """`depth` residual blocks; the first one changes width and applies the spatial stride."""

    def __init__(
        self, depth: int, dim_in: int, dim_inner: int, dim_out: int, temporal_kernel: int, stride: int
    ) -> None:
        super().__init__()
        self.res_blocks = nn.ModuleList(
            ResBlock(
                dim_in if i == 0 else dim_out, dim_inner, dim_out, temporal_kernel, stride if i == 0 else 1
            )
            for i in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.res_blocks:
            x = block(x)
        return x


class FuseFastToSlow(nn.Module):
    """Lateral connection: conv (7 x 1 x 1, temporal stride alpha) on fast, concatenated to slow."""

    def __init__(self, fast_dim: int, ratio: int, kernel: int, alpha: int) -> None:
        super().__init__()
        self.conv_fast_to_slow = nn.Conv3d(
            fast_dim, fast_dim * ratio, (kernel, 1, 1), (alpha, 1, 1), (kernel // 2, 0, 0), bias=False
        )
        self.norm = nn.BatchNorm3d(fast_dim * ratio)
        self.activation = nn.ReLU()

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor]:
        slow, fast = x
        fuse = self.activation(self.norm(self.conv_fast_to_slow(fast)))
        return [torch.cat([slow, fuse], dim=1), fast]


class MultiPathWayWithFuse(nn.Module):
    """Run each pathway's block, then the optional fusion."""

    def __init__(self, multipathway_blocks: nn.ModuleList, multipathway_fusion: nn.Module | None) -> None:
        super().__init__()
        self.multipathway_blocks = multipathway_blocks
        self.multipathway_fusion = multipathway_fusion

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor]:
        x = [block(xi) for block, xi in zip(self.multipathway_blocks, x)]
        return x if self.multipathway_fusion is None else self.multipathway_fusion(x)


class PoolConcatPathway(nn.Module):
    """Global average pool of each pathway, concatenated along channels (no weights)."""

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([xi.mean(dim=(2, 3, 4)) for xi in x], dim=1)  # [B, C_slow + C_fast]


class Head(nn.Module):
    """Classifier of the released checkpoint (`blocks.6.proj`); unused for features."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_features, num_classes)


class SlowFast(nn.Module):
    """SlowFast network; `forward(slow [B,3,T/alpha,H,W], fast [B,3,T,H,W])` -> features [B, 2304]."""

    def __init__(self, cfg: SlowFastConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or SlowFastConfig()
        self.cfg = cfg
        b, r = cfg.beta_inv, cfg.fusion_ratio

        def fusion(slow_width: int) -> FuseFastToSlow:
            return FuseFastToSlow(slow_width // b, r, cfg.fusion_kernel, cfg.alpha)

        blocks: list[nn.Module] = [
            MultiPathWayWithFuse(
                nn.ModuleList([BasicStem(cfg.stem_dim, 1), BasicStem(cfg.stem_dim // b, 5)]),
                fusion(cfg.stem_dim),
            )
        ]
        # res2..res5; slow conv_a temporal kernel is 1 in res2-res3 and 3 in res4-res5, fast always 3
        dim_in, dim_out = cfg.stem_dim, cfg.stem_dim * 4
        n_stages = len(cfg.depths)
        for idx, depth in enumerate(cfg.depths):
            stride = 1 if idx == 0 else 2
            slow_kernel = 1 if idx < 2 else 3
            slow = ResStage(depth, dim_in + dim_in * r // b, dim_out // 4, dim_out, slow_kernel, stride)
            fast = ResStage(depth, dim_in // b, dim_out // 4 // b, dim_out // b, 3, stride)
            last = idx == n_stages - 1
            blocks.append(
                MultiPathWayWithFuse(nn.ModuleList([slow, fast]), None if last else fusion(dim_out))
            )
            dim_in, dim_out = dim_out, dim_out * 2
        blocks.append(PoolConcatPathway())
        blocks.append(Head(cfg.feature_dim, cfg.num_classes))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, slow: torch.Tensor, fast: torch.Tensor) -> torch.Tensor:
        x = [slow, fast]
        for block in self.blocks[:-2]:
            x = block(x)
        return self.blocks[-2](x)  # [B, feature_dim], pooled before the classifier


def load_slowfast(path: str | Path, cfg: SlowFastConfig | None = None) -> SlowFast:
    """Build SlowFast and load a pytorchvideo checkpoint strictly; `CheckpointError` on any key mismatch."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"SlowFast weights not found at {path}: sadetr never downloads; get the pytorchvideo "
            f"Kinetics-400 SlowFast R50 8x8 checkpoint SLOWFAST_8x8_R50.pyth from {SLOWFAST_URL}"
        )
    state = load_weights(path, "SlowFast checkpoint")  # weights_only: a crafted file cannot run code
    if isinstance(state, dict) and "model_state" in state:
        state = state["model_state"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors (or a dict with 'model_state')")
    model = SlowFast(cfg)
    expected = model.state_dict()
    # BatchNorm step counters carry no weights; older conversions of the checkpoint omit them
    counters = {k for k in set(expected) - set(state) if k.endswith("num_batches_tracked")}
    state = {**state, **{k: torch.tensor(0) for k in counters}}
    mismatch = state_mismatch(
        {k: tuple(v.shape) for k, v in expected.items()}, {k: tuple(v.shape) for k, v in state.items()}
    )
    if mismatch:
        raise CheckpointError(f"{path}: not a slowfast_r50 checkpoint of this shape: {mismatch}")
    model.load_state_dict(state, strict=True)
    return model.eval()
