"""The Moment-DETR and QD-DETR baselines (docs/baselines.md): their architectures and their criterion.

Owns what only the baselines use: `moment_detr` (Moment-DETR and the blocks QD-DETR reuses from it),
`qd_detr` (QD-DETR with the Table 11 grafts) and `losses` (`BaselineCriterion`, the class head's terms).
Everything SA-DETR shares with them (layers, span ops, matcher, `SetCriterion` and the saliency losses)
stays in `sadetr.model` and is imported from there; nothing in `sadetr.model` imports this package
except `sadetr.model.build`, which dispatches `model.name` to the builders here.
"""
