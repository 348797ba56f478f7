"""Preparing shards: ``python -m harness.prepare`` (see :mod:`harness.prepare.cli`) cuts videos
into clips and packs them into WebDataset tar shards, whole or split over machines
(``--part I/N``, then ``merge``).

Modules: ``cli`` (the command; imports nothing heavy), ``run`` (:func:`prepare`), ``sources``
(input, split, parts of it), ``cut`` (staged clips, the worker pool), ``pack`` (shards, journal),
``manifest`` (manifests, run records), ``merge`` (joining parts), ``parts`` (``--part``, SLURM
arrays, file names).
"""

__all__ = ["Part", "Settings", "main", "prepare"]  # and harness.prepare.merge.merge

_HOMES = {"Part": "harness.prepare.parts", "Settings": "harness.data.cutting", "main": "harness.prepare.cli",
          "prepare": "harness.prepare.run"}  # fmt: skip


def __getattr__(name: str):
    """The public names on first use (``--help`` imports nothing but the command line)."""
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'harness.prepare' has no attribute {name!r}")
