"""``python -m harness.datasets NAME``: a public benchmark's official annotation files turned into
harness listings (``train.csv``, ``val.csv``, ``classes.txt``); :mod:`.cli` is the command,
:mod:`.common` the output (listings, summary, ``missing.txt``) and each other module one dataset."""
