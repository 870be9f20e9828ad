"""`torch.compile` of the eval model (`sadetr bench --compile`) gives the eager model's outputs."""

from __future__ import annotations

import pytest
import torch

from sadetr.config import compose_config
from sadetr.engine.bench import synthetic_batch
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
