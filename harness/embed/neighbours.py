"""Nearest neighbours by cosine in a ``harness.embed`` folder: the retrieval example.

    python -m harness.embed.neighbours DIR QUERY... [-k 5] [--feature probe]

Each ``QUERY`` names videos of the index: a path as the index has it, or its end (``right_003.mp4``
finds ``val/right_003.mp4``); every row of a matching video is a query (each window of a long
video). For each query the ``k`` most similar other rows are printed with their cosine similarity.

Memory stays bounded whatever the folder's size: the index is read as a stream (three passes:
find the queries, score every shard against them keeping the best ``k`` per query, name the
winners) and each shard's vectors are memory-mapped and scored in blocks of rows and of queries. NumPy only: no torch.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.core.errors import UserError, entry_point
from harness.embed.shard_files import iter_index, read_shard

BLOCK = 65536  #: rows of a shard scored at once
QUERIES = 256  #: queries scored at once (a long video's windows can be thousands of queries)


@dataclass
class Query:
    """One query row and its best ``(similarity, shard, row)`` so far, best first."""

    video: str
    window: str
    shard: str
    row: int
    vector: np.ndarray | None = None
    best: list[tuple[float, str, int]] = field(default_factory=list)


def matches(video: str, query: str) -> bool:
    """Whether the index's ``video`` is the one ``query`` names (the path, or its end)."""
    return video == query or video.endswith("/" + query.lstrip("/")) or video.endswith("#" + query)


def read_vectors(folder: Path, shard: str, feature: str) -> np.ndarray:
    """``[rows, D]`` vectors of ``feature`` in one shard (memory-mapped where the format allows)."""
    vectors = read_shard(folder, shard, [feature]).get(feature)
    if vectors is None:
        raise UserError(f"{folder}: shard {shard} has no feature {feature!r} (embed it with --features {feature})")
    if vectors.ndim != 2:
        raise UserError(f"{folder}: feature {feature!r} is not one vector per row (shape {vectors.shape[1:]}); "
                        "use pooled or probe")  # fmt: skip
    return vectors


def unit(vectors: np.ndarray) -> np.ndarray:
    """``vectors`` scaled to unit length along the last axis (float32)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def find_queries(folder: Path, queries: list[str]) -> tuple[list[Query], list[str]]:
    """The index rows each query names and the folder's shards, in order (pass 1)."""
    found, shards = [], {}
    for row in iter_index(folder):
        if row["shard"]:
            shards[row["shard"]] = None
            if any(matches(row["video"], q) for q in queries):
                found.append(Query(row["video"], row["window"], row["shard"], int(row["row"])))
    missing = [q for q in queries if not any(matches(f.video, q) for f in found)]
    if missing:
        raise UserError(f"{folder / 'index.csv'}: no embedded video matches {', '.join(missing)}")
    return found, sorted(shards)


def search(folder: str | Path, queries: list[str], k: int = 5, feature: str | None = None) -> list[Query]:
    """Each query row of ``queries`` with its ``k`` nearest other rows by cosine (``Query.best``)."""
    folder = Path(folder)
    found, shards = find_queries(folder, queries)
    feature = feature or default_feature(folder)
    for shard in shards:  # the queries' own vectors
        mine = [q for q in found if q.shard == shard]
        if mine:
            vectors = read_vectors(folder, shard, feature)
            for query in mine:
                query.vector = unit(vectors[query.row])
    matrix = np.stack([q.vector for q in found])
    for shard in shards:  # pass 2: score every row, keep the best k (+1: the query itself) per query
        vectors = read_vectors(folder, shard, feature)
        for start in range(0, len(vectors), BLOCK):
            block = unit(vectors[start : start + BLOCK])
            keep = min(k + 1, len(block))
            for first in range(0, len(found), QUERIES):  # scores [block, QUERIES] at most: bounded
                chunk = found[first : first + QUERIES]
                scores = block @ matrix[first : first + QUERIES].T
                top = np.argpartition(-scores, keep - 1, axis=0)[:keep]  # the best `keep` rows, unordered
                for column, query in enumerate(chunk):
                    candidates = [(float(scores[i, column]), shard, start + int(i)) for i in top[:, column]]
                    merged = query.best + [c for c in candidates if (c[1], c[2]) != (query.shard, query.row)]
                    query.best = sorted(merged, key=lambda c: (-c[0], c[1], c[2]))[:k]
    return found


def default_feature(folder: Path) -> str:
    """``probe`` when the folder has it, else ``pooled``."""
    import json

    try:
        features = json.loads((folder / "embeddings.json").read_text())["features"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{folder / 'embeddings.json'} is missing or damaged: embed the videos again") from None
    names = list(features) if isinstance(features, (list, dict)) else []
    for name in ("probe", "pooled"):
        if name in names:
            return name
    raise UserError(f"{folder}: holds {', '.join(names)}; neighbours need one vector per row (pooled or probe)")


def names_of(folder: Path, queries: list[Query]) -> dict[tuple[str, int], str]:
    """``(shard, row) -> video[@window]`` of every winner (pass 3)."""
    wanted = {(shard, row) for q in queries for _, shard, row in q.best}
    named = {}
    for row in iter_index(folder):
        key = (row["shard"], int(row["row"]) if row["row"] else -1)
        if key in wanted:
            named[key] = row["video"] + (f"@{row['window']}" if row["window"] else "")
    return named


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, checked (a bad flag is a :class:`UserError`: one line, exit 2)."""
    parser = argparse.ArgumentParser(prog="harness-embed-neighbours", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("folder", type=Path, help="a harness.embed output folder")
    parser.add_argument("queries", nargs="+", help="videos of the index (a path, or its end)")
    parser.add_argument("-k", type=int, default=5, help="neighbours per query (default 5)")
    parser.add_argument("--feature", default=None, help="pooled or probe (default: probe when embedded, else pooled)")
    args = parser.parse_args(argv)
    if args.k < 1:
        raise UserError(f"-k must be >= 1, got {args.k}")
    return args


@entry_point
def main(argv: list[str] | None = None) -> int:
    """Print each query's nearest neighbours."""
    args = parse_args(argv)
    found = search(args.folder, args.queries, args.k, args.feature)
    named = names_of(args.folder, found)
    for query in found:
        print(query.video + (f"@{query.window}" if query.window else ""))
        for rank, (score, shard, row) in enumerate(query.best, start=1):
            print(f"  {rank:>3}  {score:.3f}  {named[(shard, row)]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
