"""Write what ``harness.plan --suggest`` picks for 8, 64 and 1024 GPUs at the top of each shipped
ViT config (between the ``# --- harness.plan --suggest`` lines; tests/test_plan_suggest.py fails
when a config's comment is not what the planner says today).

    python scripts/suggest_comments.py
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.config import load_config  # noqa: E402
from harness.plan.memory import count_parameters  # noqa: E402
from harness.plan.suggest import COMMENT_END, COMMENT_START, config_comment  # noqa: E402

SHIPPED = sorted([*(REPO / "configs").glob("vit*.yaml"), *(REPO / "configs").glob("vjepa21_*.yaml")])


def with_comment(text: str, comment: list[str]) -> str:
    """``text`` with its suggestion block replaced (or put after the header comment)."""
    lines = text.splitlines()
    if COMMENT_START in lines:
        start = lines.index(COMMENT_START)
        end = lines.index(COMMENT_END, start)
        lines[start : end + 1] = comment
    else:
        header = next(i for i, line in enumerate(lines) if not line.startswith("#"))
        lines[header:header] = comment
    return "\n".join(lines) + "\n"


def main() -> None:
    for path in SHIPPED:
        config = load_config(path)
        comment = config_comment(config, count_parameters(config, config.meta.num_classes or 400))
        path.write_text(with_comment(path.read_text(), comment))
        print(f"{path.relative_to(REPO)}: {comment[4].lstrip('# ')}")


if __name__ == "__main__":
    main()
