"""Floor 0: errors, atomic writes, safe paths and loading, devices, ranges, optional extras."""
