"""Evaluation: QVHighlights-official-compatible moment retrieval and highlight detection metrics.

Needs only numpy: it scores any submission file, ours or a peer's.
"""

from sadetr.eval.evaluate import evaluate, evaluate_files
from sadetr.eval.io import load_jsonl, write_json_atomic
from sadetr.eval.table import format_table

__all__ = ["evaluate", "evaluate_files", "format_table", "load_jsonl", "write_json_atomic"]
