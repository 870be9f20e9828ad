"""Data layer: annotation reader, feature store, Dataset + collate, synthetic dataset generator.

Never imports the model, the engine or the CLI.
"""
