"""``python -m harness.plan``: memory per rank for every strategy before a run (:mod:`.cli`); with
``--simulate``, a fake process group of N ranks and a predicted step time (:mod:`.simulate`)."""
