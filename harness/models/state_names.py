"""Renaming state dicts between layouts: name pairs become regex rules, fused projections are
stacked or split. Used by every family's foreign-layout adapters."""

from __future__ import annotations

import re

import torch


def stack_parts(state: dict[str, torch.Tensor], prefix: str, parts: tuple[str, ...]) -> dict[str, torch.Tensor]:
    out = {}
    for kind in ("weight", "bias"):
        keys = [f"{prefix}{part}.{kind}" for part in parts]
        if all(key in state for key in keys):
            out[kind] = torch.cat([state.pop(key) for key in keys], dim=0)
    return out


def rename_rules(pairs: tuple[tuple[str, str], ...], to_hf: bool) -> tuple[tuple[str, str], ...]:
    """Regex rules for :func:`_rename` from name pairs, in either direction."""
    rules = []
    for hf, ours in pairs:
        source, target = (ours, hf) if to_hf else (hf, ours)
        pattern = re.escape(source).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{j\}", r"(?P<j>\d+)")
        rules.append(
            (pattern + ("" if source.endswith(".") else "$"), target.replace("{i}", r"\g<i>").replace("{j}", r"\g<j>"))
        )
    return tuple(rules)


def rename(state: dict[str, torch.Tensor], rules: tuple[tuple[str, str], ...]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        for pattern, replacement in rules:
            new, count = re.subn("^" + pattern, replacement, key)
            if count:
                out[new] = value
                break
    return out


def split_parts(
    state: dict[str, torch.Tensor], key: str, prefix: str, parts: tuple[str, ...]
) -> dict[str, torch.Tensor]:
    """Inverse of :func:`stack_parts`: ``key.{weight,bias}`` cut into equal ``prefix{part}.*`` pieces."""
    out = {}
    for kind in ("weight", "bias"):
        if f"{key}.{kind}" in state:
            for part, piece in zip(parts, state.pop(f"{key}.{kind}").chunk(len(parts), dim=0)):
                out[f"{prefix}{part}.{kind}"] = piece.contiguous()
    return out
