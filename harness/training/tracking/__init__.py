"""Run tracking: console and per-rank CSV logs plus W&B (:mod:`.logger`), TensorBoard
(:mod:`.tensorboard`), throughput/MFU/memory and stall detection (:mod:`.observability`), the
start and end summaries (:mod:`.summary`)."""
