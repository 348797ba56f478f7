"""Model families: one registration per encoder family, and the contract its encoders keep.

A family (``vit``: V-JEPA 2's video ViT; ``vjepa2.1``: V-JEPA 2.1's; ``videomae``: VideoMAE
v1/v2) registers itself in its own file with :func:`register_family`: its named sizes, its
constructor, its own options, the state-dict adapters of the foreign layouts it reads, and the
check that refuses a file of another version's layout by name. Everything else the rest of the harness
needs is asked of the built encoder, which every family's encoder provides (timm's habit of the
same methods on every model):

* ``embed_dim``, ``num_heads``, ``patch_size``, ``tubelet_size``: the token geometry;
* ``blocks``: an ``nn.ModuleList`` of the transformer blocks, the units that activation
  checkpointing wraps, compile compiles and FSDP2/ZeRO shard;
* ``layer_id(name) -> int`` and ``num_layers``: the depth index of a parameter for layer-wise
  learning-rate decay (0 = embeddings, ``i + 1`` = block ``i``, ``num_layers - 1`` = after them);
* ``forward_flops(frames, height, width) -> int``: analytic forward FLOPs of one clip;
* ``init_stem()`` and ``init_block(index, block)``: initialise the parameters outside the blocks,
  and one block; ``init_weights()`` calls them through :func:`init_all_units`, each unit from its
  own seed, so an encoder built on the meta device can be materialised a block at a time (one
  shard per rank) and still get exactly the weights of a direct build;
* ``level_norm(index) -> nn.Module``: the norm that makes block ``index``'s output tokens a
  feature level (``out_layers``, ``harness.embed --levels``);
* ``forward(x [B, C, T, H, W]) -> tokens [B, N, D]`` (``T = 1`` through an image path, where the
  family has one: :attr:`ModelFamily.image_path_option`).

Nothing here knows the config tree: the training code hands a family plain values (see
:class:`EncoderSettings`) and a dict of the family's options, which the family validates.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from harness.core.errors import UserError


class FamilyError(UserError, ValueError):
    """An unknown model name or family option; the message names it and what is known."""


@dataclass(frozen=True)
class EncoderSettings:
    """What every family's constructor receives, whatever the family: plain values from the config."""

    img_size: int | tuple[int, int] = 224  #: input size in pixels: one side (square) or (height, width)
    num_frames: int = 16  #: frames per clip
    patch_size: int = 16  #: spatial patch side
    tubelet_size: int = 2  #: frames per temporal patch
    depth: int | None = None  #: override the size's number of blocks (small experiments)
    drop_path_rate: float = 0.0  #: stochastic depth of the last block
    use_sdpa: bool = True  #: fused attention kernels (False: the math path)
    out_layers: tuple[int, ...] | None = None  #: multi-level features, if the family has them
    level_concat: str | None = None  #: how those levels are joined (tokens/channels; None: the family's way)


@dataclass(frozen=True)
class HFLayout:
    """A Hugging Face ``transformers`` layout of a family (``config.json`` + safetensors).

    The readers take the parsed ``config.json`` / the directory's tensors and return harness
    values; :attr:`to_transformers` goes the other way (export).
    """

    model_type: str  #: ``config.json``'s ``model_type``
    encoder_options: Callable[[dict], dict]  #: sizes and options of the encoder the directory holds
    encoder_state: Callable[[dict], dict]  #: HF tensors -> the encoder's state dict
    classifier_state: Callable[[dict], dict] | None = None  #: HF tensors -> a classifier's state dict
    classifier_options: Callable[[dict], dict] | None = None  #: classifier kind and options in the directory
    #: (frames, crop: one side, or [height, width]) it was made for
    clip_shape: Callable[[dict], tuple[int, Any]] = lambda config: (16, 224)
    model_name: str = ""  #: a registered name to build from (``config.json`` then sets the sizes)
    #: the export hook (``--format hf``): ``(classifier, preprocessing, config values) -> (checked
    #: transformers model, processor)``; a user error says why a model cannot go there (see
    #: :mod:`harness.models.hf_transformers`); None: the family cannot be exported to this layout
    to_transformers: Callable[[nn.Module, Any, dict], tuple[nn.Module, Any]] | None = None


@dataclass(frozen=True)
class ModelFamily:
    """One encoder family: what it is called, its sizes, how to build it and read foreign weights."""

    name: str  #: family name (``model.family`` in a config)
    sizes: Mapping[str, Mapping[str, Any]]  #: model name -> size and fixed options
    build: Callable[..., nn.Module]  #: ``build(**size, **settings, **options)`` -> encoder
    options: type  #: a dataclass of the family's own options (defaults = the family's defaults)
    encoder_states: Callable[[dict, str | None], dict | None]  #: (read checkpoint, key) -> encoder state or None
    classifier_states: Callable[[dict, int], dict | None] | None = None  #: same for a classifier head
    hf: HFLayout | None = None  #: the ``transformers`` layout, when there is one
    default_classifier: str = "attentive"  #: the head this family's own recipe trains
    top_level_options: tuple[str, ...] = ()  #: ``model.<key>`` options this family reads (V-JEPA 2 names)
    #: ``(encoder state, built encoder) -> reason or None``: why a state in a layout this family
    #: reads (another version of it, a variant the encoder was not built as) must not be loaded
    #: into this encoder, said in one line; checked before any tensor is copied
    layout_problem: Callable[[dict, nn.Module], str | None] | None = None
    #: the boolean option (of :attr:`options`) that builds an image path: a patch embedding that
    #: takes 1-frame clips (still images) whatever ``tubelet_size`` (V-JEPA 2.1's
    #: ``patch_embed_img``); None: the family has none, so a clip's frames must fill its tubelets
    image_path_option: str | None = None

    def option_values(self, values: Mapping[str, Any], where: str = "model.options") -> dict[str, Any]:
        """The family's options with ``values`` applied; an unknown key or a wrong type is a
        :class:`FamilyError` naming ``where.key``."""
        known = {f.name: f for f in dataclasses.fields(self.options)}
        out = {name: f.default for name, f in known.items()}
        for key, value in values.items():
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise FamilyError(f"{where}.{key}: not an option of the {self.name} family{hint} "
                                  f"(options: {', '.join(sorted(known)) or 'none'})")  # fmt: skip
            expected = type(known[key].default)
            if expected is float and not isinstance(value, bool):
                try:
                    value = float(value)  # YAML 1.1 reads "1e-6" as a string
                except (TypeError, ValueError):
                    pass
            if known[key].default is not None and not isinstance(value, expected):
                raise FamilyError(f"{where}.{key}={value!r}: expected {expected.__name__}")
            out[key] = value
        return out

    def create(self, name: str, settings: EncoderSettings, options: Mapping[str, Any] | None = None,
               device: torch.device | str | None = None, **architecture: Any) -> nn.Module:  # fmt: skip
        """Build the encoder ``name`` with ``settings`` and the family's ``options`` (see
        :func:`build_encoder` for ``device``).

        An option left at its default does not undo what the size's name fixes (``vit_large_rope``
        keeps RoPE); ``architecture`` (e.g. read from a Hugging Face ``config.json``) overrides all.
        """
        kwargs = dict(self.sizes[name])
        kwargs.update({key: value for key, value in dataclasses.asdict(settings).items() if value is not None})
        kwargs["out_layers"] = settings.out_layers
        kwargs["level_concat"] = settings.level_concat
        defaults = self.option_values({})
        for key, value in self.option_values(options or {}).items():
            if key not in self.sizes[name] or value != defaults[key]:
                kwargs[key] = value
        kwargs.update(architecture)
        return build_encoder(self.build, kwargs, device)


FAMILIES: dict[str, ModelFamily] = {}


def register_family(family: ModelFamily) -> ModelFamily:
    """Add ``family`` to the registry (its model names must be new)."""
    taken = {name for other in FAMILIES.values() if other.name != family.name for name in other.sizes}
    clash = taken & set(family.sizes)
    if clash:
        raise ValueError(f"family {family.name!r}: model names already registered: {sorted(clash)}")
    FAMILIES[family.name] = family
    return family


def model_names() -> list[str]:
    """Every registered model name, of every family."""
    return sorted(name for family in FAMILIES.values() for name in family.sizes)


def family_of(model_name: str) -> ModelFamily:
    """The family that registered ``model_name``; an unknown name suggests the closest one."""
    for family in FAMILIES.values():
        if model_name in family.sizes:
            return family
    close = difflib.get_close_matches(model_name, model_names(), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise FamilyError(f"unknown model {model_name!r}{hint} (families: {', '.join(sorted(FAMILIES))}; "
                      f"names: {', '.join(model_names())})")  # fmt: skip


def family_of_module(encoder: nn.Module) -> ModelFamily:
    """The family of a built encoder (its class's ``family`` attribute)."""
    name = getattr(encoder, "family", None)
    if name not in FAMILIES:
        raise ValueError(f"{type(encoder).__name__} belongs to no registered model family")
    return FAMILIES[name]


def family_of_hf(model_type: str | None) -> ModelFamily | None:
    """The family whose Hugging Face layout has this ``model_type`` (None if none has)."""
    for family in FAMILIES.values():
        if family.hf is not None and family.hf.model_type == model_type:
            return family
    return None


def hf_model_types() -> list[str]:
    """The ``config.json`` model types the registered families read."""
    return sorted(family.hf.model_type for family in FAMILIES.values() if family.hf is not None)


def build_encoder(build: Callable[..., nn.Module], kwargs: dict[str, Any],
                  device: torch.device | str | None = None) -> nn.Module:  # fmt: skip
    """``build(**kwargs)`` on the meta device, then (unless ``device`` is ``"meta"``) allocated on
    ``device`` (default: the CPU) and initialised once by the encoder's ``init_weights``.

    Every encoder is made this way, so its initial weights depend only on the random state when
    ``init_weights`` runs: a direct build and a meta build materialised later (one shard per rank,
    :mod:`harness.parallel`) give the same weights for the same seed, and no memory is spent on
    the constructors' own initialisation.
    """
    with torch.device("meta"):
        encoder = build(**kwargs)
    if str(device) == "meta":
        return encoder
    return materialize(encoder, device or "cpu")


def draw_init_seed() -> int:
    """One draw from the global CPU generator: the base seed of an encoder's initialisation."""
    return int(torch.randint(0, 2**62, (1,), device="cpu").item())


def init_unit(encoder: nn.Module, base_seed: int, index: int | None = None, block: nn.Module | None = None) -> None:
    """Initialise one unit of ``encoder`` from its own seed: the stem (everything outside the
    blocks) when ``index`` is None, else ``block`` as block ``index`` (``block`` may be a copy of
    it elsewhere: a strategy materialising one block at a time). The global generator is untouched."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed((base_seed + 1_000_003 * (0 if index is None else index + 1)) % 2**63)
        if index is None:
            encoder.init_stem()
        else:
            encoder.init_block(index, getattr(block, "_checkpoint_wrapped_module", block))


def init_all_units(encoder: nn.Module) -> None:
    """An encoder's ``init_weights``: the stem and every block, each from its own seed derived
    from one draw of the global generator (nothing on the meta device is touched)."""
    if any(p.is_meta for p in encoder.parameters()):
        return
    encoder.init_seed = draw_init_seed()
    init_unit(encoder, encoder.init_seed)
    for index, block in enumerate(encoder.blocks):
        init_unit(encoder, encoder.init_seed, index, block)


@dataclass
class DeferredBlocks:
    """How to make the blocks of an encoder whose blocks are still on the meta device (returned by
    :func:`materialize_stem`, handed to the strategy's ``prepare`` with the model): a sharding
    strategy materialises each block where it lives with :meth:`fill`, which gives it the values
    a direct build would have (same seeds), then the pretrained ones if any."""

    base_seed: int  #: the encoder's initialisation seed
    state: dict[str, torch.Tensor] | None = None  #: pretrained ``blocks.*`` tensors (memory-mapped when possible)

    def fill(self, encoder: nn.Module, index: int, block: nn.Module) -> None:
        """Initialise ``block`` (a real copy of block ``index``) and copy its pretrained tensors."""
        init_unit(encoder, self.base_seed, index, block)
        if self.state:
            prefix = f"blocks.{index}."
            values = {k[len(prefix) :]: v for k, v in self.state.items() if k.startswith(prefix)}
            getattr(block, "_checkpoint_wrapped_module", block).load_state_dict(values, strict=False)


def materialize(encoder: nn.Module, device: torch.device | str = "cpu") -> nn.Module:
    """Allocate an encoder built on the meta device on ``device`` and initialise it (the weights a
    direct build gets for the same random state)."""
    encoder.to_empty(device=device)
    encoder.init_weights()
    return encoder


def materialize_stem(encoder: nn.Module, device: torch.device | str = "cpu") -> DeferredBlocks:
    """Materialise all of a meta-device encoder but its blocks (as :func:`materialize` would) and
    return how to make each block later, one at a time, on the rank that holds it."""
    encoder.to_empty(device=device, recurse=False)
    for name, child in encoder.named_children():
        if name != "blocks":
            child.to_empty(device=device)
    encoder.init_seed = draw_init_seed()
    init_unit(encoder, encoder.init_seed)
    return DeferredBlocks(encoder.init_seed)


def layer_decay_scale(encoder: nn.Module, name: str, decay: float) -> float:
    """``decay ** (num_layers - 1 - layer_id(name))``: 1 for the last layer, smaller toward the input."""
    return decay ** (encoder.num_layers - 1 - encoder.layer_id(name))
