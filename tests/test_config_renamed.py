"""Each strategy owns its ``distributed.<name>`` section; the flat keys of before still load."""

import dataclasses
import textwrap

import pytest

from harness.config import ConfigError, config_from_dict, load_config, to_dict
from harness.parallel.registry import OPTIONS_SECTIONS, RENAMED_KEYS, STRATEGY_SPECS

NEW = {"fsdp": {"reshard_after_forward": False, "cpu_offload": True, "reduce_dtype": "bfloat16",
                "shard_group_size": None},  # (no flat name: it came after the sections)
       "deepspeed": {"config": "ds_configs/zero3.json"}}  # fmt: skip
OLD = {"fsdp_reshard_after_forward": False, "fsdp_cpu_offload": True, "fsdp_reduce_dtype": "bfloat16",
       "deepspeed_config": "ds_configs/zero3.json"}  # fmt: skip
DEPRECATIONS = [f"warning: distributed.{old} is deprecated; use distributed.{new}" for old, new in RENAMED_KEYS.items()]


def write(tmp_path, distributed: dict) -> str:
    path = tmp_path / "run.yaml"
    lines = "".join(f"  {key}: {value!r}\n".replace("'", "") for key, value in distributed.items())
    path.write_text(f"folder: {tmp_path / 'run'}\ndistributed:\n{lines}")
    return str(path)


def overrides(flat: dict) -> list[str]:
    return [f"distributed.{key}={str(value).lower() if isinstance(value, bool) else 'null' if value is None else value}"
            for key, value in flat.items()]  # fmt: skip


def nested_overrides() -> list[str]:
    return overrides({f"{name}.{key}": value for name, keys in NEW.items() for key, value in keys.items()})


def test_every_options_section_is_a_config_section():
    config = load_config(None, [])
    for name, section in OPTIONS_SECTIONS.items():
        assert STRATEGY_SPECS[name].options_section is section
        assert isinstance(getattr(config.distributed, name), section)


def test_old_flat_keys_resolve_as_the_new_nested_keys(tmp_path):
    new = load_config(None, nested_overrides())
    assert to_dict(new)["distributed"] == {"strategy": "auto", "backend": "auto", **NEW}
    assert not [note for note in new.notes if "deprecated" in note]
    from_yaml = load_config(write(tmp_path, OLD))
    from_overrides = load_config(None, overrides(OLD))
    for old in (from_yaml, from_overrides):
        assert to_dict(old)["distributed"] == to_dict(new)["distributed"]
        assert [note for note in old.notes if "deprecated" in note] == DEPRECATIONS  # one line per key


def test_the_strategies_read_their_own_sections():
    config = load_config(None, overrides(OLD))
    fsdp = STRATEGY_SPECS["fsdp"].options(config.distributed, config.data, config.optimization)
    assert fsdp == NEW["fsdp"]
    deepspeed = STRATEGY_SPECS["deepspeed"].options(config.distributed, config.data, config.optimization)
    assert deepspeed["config"] == "ds_configs/zero3.json"


def test_an_old_key_in_the_file_and_in_the_overrides_warns_once(tmp_path):
    config = load_config(write(tmp_path, {"fsdp_cpu_offload": True}), ["distributed.fsdp_cpu_offload=false"])
    assert config.distributed.fsdp.cpu_offload is False
    assert [note for note in config.notes if "deprecated" in note] == [
        "warning: distributed.fsdp_cpu_offload is deprecated; use distributed.fsdp.cpu_offload"
    ]


def test_an_override_wins_over_the_file_whichever_name_either_uses(tmp_path):
    nested = write(tmp_path, {"fsdp": {"cpu_offload": True}})
    assert load_config(nested, ["distributed.fsdp_cpu_offload=false"]).distributed.fsdp.cpu_offload is False
    flat = write(tmp_path, {"fsdp_cpu_offload": True})
    assert load_config(flat, ["distributed.fsdp.cpu_offload=false"]).distributed.fsdp.cpu_offload is False


def test_both_names_of_a_key_in_one_layer_are_an_error(tmp_path):
    message = "distributed.fsdp_cpu_offload and distributed.fsdp.cpu_offload are both set"
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["distributed.fsdp.cpu_offload=true", "distributed.fsdp_cpu_offload=false"])
    path = tmp_path / "both.yaml"
    path.write_text(
        textwrap.dedent("""\
        distributed:
          fsdp_cpu_offload: true
          fsdp: {cpu_offload: false}
    """)
    )
    with pytest.raises(ConfigError, match=message):
        load_config(str(path))


def test_a_config_saved_with_the_old_keys_loads_silently():
    saved = to_dict(load_config(None, []))
    distributed = saved["distributed"]
    for name in NEW:
        distributed.pop(name)
    distributed.update(OLD)
    config = config_from_dict(saved)
    assert dataclasses.asdict(config.distributed.fsdp) == NEW["fsdp"]
    assert config.notes == []


def test_a_strategy_section_checks_its_own_choices():
    with pytest.raises(ConfigError, match="distributed.fsdp.reduce_dtype: 'fp16' is not one of float32, bfloat16"):
        load_config(None, ["distributed.fsdp.reduce_dtype=fp16"])
    with pytest.raises(ConfigError, match="unknown key 'distributed.fsdp.offload'; did you mean 'cpu_offload'"):
        load_config(None, ["distributed.fsdp.offload=true"])


def test_resuming_a_checkpoint_saved_with_the_old_keys_warns_only_about_real_changes(caplog):
    from harness.training.state.resume import _warn_config_changes

    config = load_config(None, ["distributed.fsdp.cpu_offload=true"])
    saved = to_dict(config)
    old = saved["distributed"].pop("fsdp")
    saved["distributed"] |= {f"fsdp_{key}": value for key, value in old.items()}  # as written before the move
    with caplog.at_level("WARNING"):
        _warn_config_changes(config, saved)
    assert not caplog.records, [r.getMessage() for r in caplog.records]
    saved["distributed"]["fsdp_cpu_offload"] = False  # a real change is still reported, by its new name
    with caplog.at_level("WARNING"):
        _warn_config_changes(config, saved)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["resuming with distributed.fsdp.cpu_offload=True (the checkpoint used False)"]
