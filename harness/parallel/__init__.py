"""Everything that wraps single-device models for scale: activation checkpointing, compile, DDP/FSDP2/DeepSpeed."""
