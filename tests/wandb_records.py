"""Read an offline W&B run file (``run-<id>.wandb``) back, for tests.

wandb 0.31 ships no reader of its own. The file is a LevelDB-style log: a 7-byte header
(``:W&B``, 2-byte magic, 1-byte version), then 32 KiB blocks of records framed as
``[crc:4][length:2][type:1]`` (1 full, 2 first, 3 middle, 4 last; a block tail too short for a
header is padding), each payload a protobuf ``Record``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32 * 1024


def raw_records(path: str | Path):
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    position, pending = 7, b""
    while position + 7 <= len(data):
        left = BLOCK - position % BLOCK
        if left < 7:
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if kind == 0 and length == 0:
            position += left
            continue
        payload = data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind == 1:
            yield payload
        elif kind == 2:
            pending = payload
        elif kind == 3:
            pending += payload
        elif kind == 4:
            yield pending + payload
            pending = b""


def read_run(path: str | Path) -> dict:
    """``{"run_id", "config": {key: value}, "history": [{key: value}], "metrics": {key: [summaries]},
    "artifacts": [{type, name, aliases}]}`` of an offline run file."""
    from wandb.proto import wandb_internal_pb2

    run = {"run_id": None, "config": {}, "history": [], "metrics": {}, "artifacts": []}
    for payload in raw_records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run["run_id"] = record.run.run_id
            for item in record.run.config.update:
                run["config"][item.key] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                run["config"][item.key] = json.loads(item.value_json)
        elif kind == "metric":  # define_metric: which summary W&B keeps for a key
            summary = record.metric.summary
            kept = [name for name in ("min", "max", "mean", "best", "last", "first") if getattr(summary, name)]
            run["metrics"][record.metric.name] = kept
        elif kind == "artifact":
            item = record.artifact
            run["artifacts"].append({"type": item.type, "name": item.name, "aliases": list(item.aliases)})
        elif kind == "history":
            row = {}
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                row[key] = json.loads(item.value_json)
            run["history"].append(row)
    return run
