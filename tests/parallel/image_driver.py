"""Run by ``torchrun`` from test_image_strategies.py: train each config (a frozen tiny V-JEPA 2.1
probe) and report which patch embedding its encoder ran, whether the probe trained, the losses.

    torchrun --nproc-per-node 2 tests/parallel/image_driver.py OUT NAME:CONFIG: [NAME:CONFIG: ...]

Every rank writes ``OUT/<NAME>_r{rank}.json``. The runs share one process group (DDP and FSDP2
runs back to back), so the launcher's start-up is paid once.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from harness.config import load_config  # noqa: E402
from harness.training import Trainer  # noqa: E402
from tests.images import fit_counting_paths, tiny_vjepa21_sizes  # noqa: E402
from tests.parallel.config_driver import logged_losses, main  # noqa: E402


def run(out: Path, name: str, config: str, _: str) -> None:
    started = time.perf_counter()
    trainer = Trainer(load_config(config))
    result = fit_counting_paths(trainer)
    folder = Path(trainer.config.folder)
    trainer.strategy.barrier()
    if trainer.strategy.is_main:
        result["losses"] = logged_losses(folder)
        result["val_count"] = trainer.state.last_eval["val_count"]
        shutil.rmtree(folder, ignore_errors=True)
    result["seconds"] = time.perf_counter() - started
    (out / f"{name}_r{trainer.strategy.rank}.json").write_text(json.dumps(result))
    trainer.strategy.barrier()


if __name__ == "__main__":
    sizes, tiny, size = tiny_vjepa21_sizes()
    sizes[tiny] = size  # the configs name the tests' tiny 2.1 size (tests/images.py)
    main(sys.argv[1:], run_entry=run)
