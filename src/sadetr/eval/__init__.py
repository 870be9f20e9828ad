"""Evaluation: QVHighlights-official-compatible moment retrieval and highlight detection metrics.

Needs only numpy: it scores any submission file, ours or a peer's.
"""
