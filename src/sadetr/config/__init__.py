"""The run config: typed sections, layered YAML composition, recipes, presets, legacy keys."""
