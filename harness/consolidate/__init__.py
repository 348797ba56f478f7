"""``python -m harness.consolidate``: any checkpoint into one plain export plus V-JEPA 2's probe
layout (:mod:`.cli`; the library is :mod:`harness.export.consolidate`)."""
