"""What a run keeps across restarts: checkpoints (:mod:`.checkpoint`), resume (:mod:`.resume`),
the run lock (:mod:`.run_lock`), counters (:mod:`.run_state`), the weight average (:mod:`.ema`),
preemption signals (:mod:`.signals`)."""
