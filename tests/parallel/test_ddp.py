"""DDP over a model whose forward skips some trained parameters (one process, gloo)."""

from __future__ import annotations

import torch
import torch.distributed as dist

from harness.models import create_encoder
from harness.parallel.ddp import DDPStrategy
from harness.parallel.precision import Precision


def test_a_vjepa21_encoder_fine_tunes_under_ddp(tmp_path):
    # A video never reaches V-JEPA 2.1's image path (nor an image the video one): without DDP's
    # search for unused parameters the second step fails ("Expected to have finished reduction").
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        encoder = create_encoder("vjepa2_1_vit_base_384", embed_dim=16, num_heads=1, depth=4, img_size=32, num_frames=4)
        cpu = torch.device("cpu")
        model, optimizer = DDPStrategy(cpu, Precision("float32", cpu), 0, 1).prepare(
            encoder, lambda m: torch.optim.SGD(m.parameters(), lr=0.1)
        )
        for frames in (4, 4, 1, 4):
            model(torch.randn(2, 3, frames, 32, 32)).square().mean().backward()
            optimizer.step()
            optimizer.zero_grad()
        assert model.find_unused_parameters
    finally:
        dist.destroy_process_group()
