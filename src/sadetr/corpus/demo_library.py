"""The output of `sadetr demo` (`make demo`) as an input of `serve`, `app` and `search` (`--demo DIR`).

A demo folder holds a trained checkpoint (`run/best.ckpt`), a corpus index of its validation videos
(`corpus/index`) and the synthetic data (`data/`). Everything in it is SYNTHETIC: its videos are feature
files only (there are no video files to play), and its queries are sentences whose token features were
generated together with the videos (`sadetr.data.synth`), not by a text encoder. No CLIP weights are
needed, and none could encode a new sentence for this model: a typed sentence is looked up among the
demo's own queries (case, spacing and the final full stop ignored), and any other sentence is refused
with a few that work.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sadetr.core.errors import ConfigError, DataError
from sadetr.core.extras import missing
from sadetr.core.paths import DEMO_DIR, check_qid, safe_child
from sadetr.core.query_text import normalize_query
from sadetr.data.annotations import read_annotations
from sadetr.data.features import TEXT_KEY, load_feature_file

log = logging.getLogger(__name__)

MAKE_HINT = "run `make demo` (or `sadetr demo --out DIR`) first"


@dataclass(frozen=True)
class DemoQuery:
    """One query of the demo's validation split and where it truly happens."""

    qid: int | str
    query: str
    vid: str
    duration: float  # of the video, seconds
    relevant_windows: list[list[float]]


def query_key(text: str) -> str:
    """The form under which a typed sentence matches a demo query.

    >>> query_key("  The chef opens the MAP ") == query_key("the chef opens the map.")
    True
    """
    return normalize_query(text).casefold().rstrip(".").strip()


class DemoLibrary:
    """A `sadetr demo` output folder: its checkpoint, its index and its query catalogue."""

    def __init__(self, root: Path, queries: list[DemoQuery], text_source: str, text_dim: int) -> None:
        self.root = root
        self.checkpoint = root / "run" / "best.ckpt"
        self.index = root / "corpus" / "index"
        self.feat_root = root / "data" / "features"
        self.queries = queries
        self.text_source = text_source
        self.text_dim = text_dim
        self._by_key: dict[str, DemoQuery] = {}
        for q in queries:
            self._by_key.setdefault(query_key(q.query), q)  # paraphrases with equal text: the first

    @classmethod
    def open(cls, root: Path | str | None = None, flag: str = "--demo") -> DemoLibrary:
        """The demo in `root` (default runs/demo); a `ConfigError` on `flag` naming what is missing."""
        import yaml

        root = Path(root or DEMO_DIR)
        needed = {
            "checkpoint": root / "run" / "best.ckpt",
            "corpus index": root / "corpus" / "index",
            "queries": root / "data" / "annotations" / "val.jsonl",
            "data config": root / "data" / "dataset.yaml",
        }
        absent = [f"{what} ({path})" for what, path in needed.items() if not path.exists()]
        if absent:
            hint = MAKE_HINT
            if missing("faiss"):  # the demo skips its corpus step without faiss
                hint = "the demo builds its index only with faiss: pip install 'sadetr[search]', then " + hint
            raise ConfigError(f"no demo in {root}: missing {', '.join(absent)}; {hint}", key=flag)
        data = (yaml.safe_load(needed["data config"].read_text(encoding="utf-8")) or {}).get("data") or {}
        queries = [
            DemoQuery(a.qid, a.query, a.vid, float(a.duration), [list(w) for w in a.windows])
            for a in read_annotations(needed["queries"])
        ]
        if not queries:
            raise ConfigError(f"the demo in {root} has no queries ({needed['queries']} is empty)", key=flag)
        text_source = str(data.get("text_source", "clip_text_features"))
        return cls(root, queries, text_source, int(data.get("text_dim", 512)))

    @staticmethod
    def default_if_made(flag: str) -> Path | None:
        """runs/demo when `make demo` has made it there (a checkpoint and an index), else None; says on
        the log that `flag` is taken as `--demo runs/demo`."""
        if (DEMO_DIR / "run" / "best.ckpt").is_file() and (DEMO_DIR / "corpus" / "index").is_dir():
            log.info(
                "no %s given: running on the synthetic demo in %s (as --demo %s)",
                flag,
                DEMO_DIR,
                DEMO_DIR,
            )
            return DEMO_DIR
        return None

    # ------------------------------------------------------------------ the catalogue

    def find(self, text: str) -> DemoQuery | None:
        """The demo query a typed sentence names, or None."""
        return self._by_key.get(query_key(text))

    def examples(self, n: int = 3) -> list[str]:
        return [q.query for q in self.queries[:n]]

    def features(self, text: str, field: str = "query") -> np.ndarray:
        """Token features [L_t, text_dim] of the demo query `text`; `DataError` for any other sentence."""

        q = self.find(text)
        if q is None:
            shown = "; ".join(repr(x) for x in self.examples())
            raise DataError(
                f"{text!r} is not one of the {len(self.queries)} queries of this synthetic demo, which has "
                f"no text encoder (give --clip for a real model); try one of them, e.g. {shown}",
                field=field,
            )
        name = f"qid{check_qid(q.qid)}.npz"
        path = safe_child(self.feat_root / self.text_source, name, field="qid")
        return load_feature_file(path, TEXT_KEY, self.text_dim)

    def durations(self) -> dict[str, float]:
        """Seconds of each video of the demo's queries (from its annotations)."""
        return {q.vid: q.duration for q in self.queries}

    def describe(self) -> str:
        """One paragraph for a user: what the demo is and what it can answer."""
        videos = len({q.vid for q in self.queries})
        return (
            f"SYNTHETIC DEMO ({self.root}): {videos} generated videos (feature files, no video files) and "
            f"{len(self.queries)} generated sentences, each tied to its own synthetic query features. Only "
            f"these sentences work (no text encoder exists for them), e.g. {self.examples(1)[0]!r}."
        )
