"""Corpus moment retrieval: "which video, and when" over a library indexed with SA-DETR's L_vtc embedding.

`build_index` writes an index (faiss + SQLite sidecar, `store.py`); `CorpusSearcher` retrieves windows by
cosine, localises the query in them with SA-DETR and ranks the moments across videos (`search.py`);
`metrics.py` scores rankings with the TVR protocol; `shards.py` exports Parquet shards for vector servers.
"""

from sadetr.corpus.index import build_index, remove_videos
from sadetr.corpus.search import CorpusSearcher, SearchHit

__all__ = ["CorpusSearcher", "SearchHit", "build_index", "remove_videos"]
