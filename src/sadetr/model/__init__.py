"""The SA-DETR model, its baselines (Moment-DETR, QD-DETR), matcher and losses.

Never imports the data layer, the engine or the CLI: modules take plain tensors and arguments;
`build_model(cfg)` / `build_criterion(cfg)` are the only readers of the config.
"""
