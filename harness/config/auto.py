"""What loading decides for the user: V-JEPA 2's clip-sampling priority and the ``auto`` keys
whose value depends on where the file comes from (V-JEPA 2 app, V-JEPA 2 eval, or harness).

Each decision is recorded in ``config.notes`` (warnings start with ``warning:``).
"""

from __future__ import annotations

from typing import Any

from harness.config import vjepa2_eval

SAMPLING_KEYS = ("fps", "duration", "frame_step")  # V-JEPA 2's priority when several are set


def resolve_sampling(data: dict[str, Any], notes: list[str]) -> None:
    """Keep one of fps > duration > frame_step for training and for validation (the seed app's
    rule), naming what was set aside; validation defaults to the training's choice."""
    for prefix, name in (("", "training"), ("val_", "validation")):
        given = [k for k in SAMPLING_KEYS if data.get(prefix + k) is not None]
        if len(given) > 1:
            dropped = ", ".join(f"data.{prefix}{k}={data[prefix + k]!r}" for k in given[1:])
            notes.append(
                f"warning: several {name} sampling options set; using data.{prefix}{given[0]}="
                f"{data[prefix + given[0]]!r} (V-JEPA 2's order fps > duration > frame_step), ignoring {dropped}"
            )
        if given:
            for key in SAMPLING_KEYS:
                data[prefix + key] = data[prefix + key] if key == given[0] else None
        elif not prefix:
            data.update(fps=None, duration=None, frame_step=4)  # the seed's default step
        else:
            for key in SAMPLING_KEYS:
                data[prefix + key] = data[key]


def file_origin(values: dict[str, Any]) -> str:
    """Where a config file comes from: ``vjepa2_eval`` (an evaluation file), ``vjepa2_app`` (a
    classifier app file, which names its ``app``) or ``harness``."""
    if vjepa2_eval.is_eval_layout(values):
        return "vjepa2_eval"
    return "vjepa2_app" if "app" in values else "harness"


def split_overrides(overrides: list[str], eval_layout: bool) -> tuple[list[str], list[str]]:
    """Overrides in the file's own (V-JEPA 2 eval) layout apply before translation; ours after."""
    if not eval_layout:
        return [], overrides
    roots = (*vjepa2_eval.EVAL_SECTIONS, *vjepa2_eval.EVAL_TOP_KEYS, *vjepa2_eval.LAUNCHER_KEYS)
    before = [item for item in overrides if item.split(".", 1)[0].split("=", 1)[0] in roots]
    return before, [item for item in overrides if item not in before]


def resolve_auto(values: dict[str, Any], origin: str, notes: list[str]) -> None:
    """Settle the ``auto`` keys whose value depends on the file's origin (V-JEPA 2's conventions
    for V-JEPA 2 files, ours for harness files), noting each choice."""
    data, model = values.setdefault("data", {}), values.setdefault("model", {})
    if data.get("sampling_rule", "auto") == "auto":
        data["sampling_rule"] = "harness" if origin == "harness" else "vjepa2"
        notes.append(f"data.sampling_rule: auto -> {data['sampling_rule']}")
    if model.get("clip_aggregation", "auto") == "auto":
        model["clip_aggregation"] = "concat_tokens" if origin == "vjepa2_eval" else "average_logits"
        notes.append(f"model.clip_aggregation: auto -> {model['clip_aggregation']}")
