"""``python -m harness.predict``: class names and probabilities for new videos; :mod:`.cli` is the
command, :mod:`.predictor` the library (windows, batching, rows)."""
