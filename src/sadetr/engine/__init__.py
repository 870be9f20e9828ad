"""Training engine: config composition, training loop, distributed data parallel, checkpoints, logging."""
