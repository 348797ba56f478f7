"""``python -m harness.report``: one HTML page from a run folder (see :mod:`.cli`)."""
