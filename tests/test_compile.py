"""`torch.compile` of the eval model (`sadetr bench --compile`) gives the eager model's outputs."""

from __future__ import annotations

import pytest
import torch

from sadetr.bench.speed import synthetic_batch
from sadetr.config.compose import compose_config
from sadetr.model.build import build_model


@pytest.mark.slow  # inductor compiles C++ on the CPU: minutes on a shared machine
def test_compiled_eval_model_equals_eager() -> None:
    cfg = compose_config("synthetic_tiny", [])
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    b = synthetic_batch(3, 75, cfg.data.max_q_l, cfg.model.video_dim, cfg.model.text_dim, seed=1)
    b["video_mask"][1, 60:] = False  # a padded video
    args = (b["video_feat"], b["video_mask"], b["text_feat"], b["text_mask"])
    with torch.no_grad():
        eager, compiled = model(*args), torch.compile(model)(*args)
    for key in ("pred_spans", "pred_quality", "saliency_scores"):
        torch.testing.assert_close(compiled[key], eager[key], rtol=1e-4, atol=1e-5, msg=key)


def _steps(model: torch.nn.Module, cfg: object, n: int) -> list[float]:
    """Losses of `n` AdamW steps on batches with different GT counts (as real batches have)."""
    from sadetr.engine.schedule import build_optimizer
    from sadetr.engine.trainer import total_loss
    from sadetr.model.build import build_criterion

    criterion = build_criterion(cfg.model, cfg.loss)  # type: ignore[attr-defined]
    opt = build_optimizer(model, cfg.train)  # type: ignore[attr-defined]
    model.train()
    losses = []
    for i in range(n):
        b = synthetic_batch(8, 75, 20, cfg.model.video_dim, cfg.model.text_dim, seed=i)  # type: ignore[attr-defined]
        torch.manual_seed(100 + i)  # the same dropout and noise-query draws in both runs
        out = model(b["video_feat"], b["video_mask"], b["text_feat"], b["text_mask"], targets=b["spans"])
        loss = total_loss(criterion(out, b), criterion.weight_dict)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_train_compile_keeps_the_state_dict_keys_and_leaves_the_denoiser_eager() -> None:
    from sadetr.engine.trainer import compile_model

    cfg = compose_config("synthetic_tiny", [])
    model = build_model(cfg.model)
    keys = list(model.state_dict())
    compile_model(model)  # lazy: nothing is compiled before the first call
    assert list(model.state_dict()) == keys  # checkpoints of a compiled run load into an eager model
    compiled = {name for name, child in model.named_children() if child._compiled_call_impl is not None}
    assert compiled == {name for name, _ in model.named_children()} - {"denoiser"}


@pytest.mark.slow  # ~4 minutes of inductor compilation on a shared 2-core machine
def test_compiled_training_steps_give_the_eager_losses() -> None:
    import copy

    from sadetr.engine.trainer import compile_model

    cfg = compose_config("synthetic_tiny", [])
    torch.manual_seed(0)
    model = build_model(cfg.model)
    compiled = copy.deepcopy(model)
    compile_model(compiled)
    eager = _steps(model, cfg, 4)
    with torch._inductor.config.patch(fallback_random=True):  # dropout draws as in eager
        got = _steps(compiled, cfg, 4)
    assert got == pytest.approx(eager, rel=1e-5)
