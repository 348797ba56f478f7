"""``python -m harness.evaluate``: score a checkpoint on a listing or shards (see :mod:`.cli`)."""
