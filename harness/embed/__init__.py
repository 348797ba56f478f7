"""``python -m harness.embed``: features of videos (clip and window embeddings) into shard files;
:mod:`.cli` is the command, :mod:`.features` the library (:func:`embed_clips`), :mod:`.source`
the models it reads (:func:`load_embedding_model`), :mod:`.plan` which units go to which shard,
:mod:`.store` and :mod:`.shard_files` the output folder (:func:`read_index`, :func:`read_shard`),
:mod:`.run` the work."""

_HOMES = {"embed_clips": "features", "load_embedding_model": "source", "read_index": "store",
          "read_shard": "shard_files"}  # fmt: skip
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    """The library's names on first use (``--help`` does not import torch)."""
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(f"harness.embed.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'harness.embed' has no attribute {name!r}")
