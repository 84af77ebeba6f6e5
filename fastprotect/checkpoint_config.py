"""What the two checkpoint configs check alike: the mixture's (:class:`fastprotect.mixture.MixtureConfig`)
and the generator's (:class:`fastprotect.generator.GeneratorConfig`).

Both are frozen dataclasses read strictly from a ``config.json`` (every field, no other; older
format versions migrated first), both name the encoder they were trained against, the mimic family
that encoder belongs to and a budget η. Each raises its own error class (a one-line
``ValueError``), so every helper takes it as an argument.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

from .vocabulary import AUTOENCODER_KINDS, MAX_ETA, MIMIC_FAMILIES, MIMIC_FAMILY_OF_ENCODER, check_eta

Config = TypeVar("Config")


def check_encoder_and_budget(config: Any, error: type[ValueError]) -> None:
    """Check ``encoder_kind``, ``mimic_base`` and ``eta`` of a config under construction; an empty
    ``mimic_base`` is first set to ``encoder_kind``'s family (:data:`MIMIC_FAMILY_OF_ENCODER`)."""
    if not config.mimic_base and config.encoder_kind in MIMIC_FAMILY_OF_ENCODER:
        object.__setattr__(config, "mimic_base", MIMIC_FAMILY_OF_ENCODER[config.encoder_kind])  # a frozen dataclass
    if config.encoder_kind not in AUTOENCODER_KINDS:
        raise error(f"unknown encoder_kind {config.encoder_kind!r}; known: {', '.join(AUTOENCODER_KINDS)}")
    if config.mimic_base not in MIMIC_FAMILIES:
        raise error(f"unknown mimic_base {config.mimic_base!r}; known: {', '.join(MIMIC_FAMILIES)}")
    try:
        check_eta(config.eta)
    except (TypeError, ValueError) as problem:
        raise error(f"eta {config.eta!r} is not a budget in (0, {MAX_ETA:.4f}]: {problem}") from None


def check_integers(config: Any, names: Iterable[str], error: type[ValueError], *, at_least: int | None = None) -> None:
    """Each field in ``names`` is an ``int`` (a JSON ``true`` or ``2.0`` is not), at least ``at_least`` when given."""
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise error(f"{name} must be an integer; got {value!r}")
        if at_least is not None and value < at_least:
            raise error(f"{name} must be at least {at_least}; got {value!r}")


def read_config_strictly(path: str | Path, config_class: Callable[..., Config], error: type[ValueError],
                         migrate: Callable[[dict[str, Any]], dict[str, Any]]) -> Config:
    """``config.json`` at ``path`` as ``config_class``: a JSON object, brought to the current format
    by ``migrate`` (which raises ``error`` for a version it cannot read), with exactly the
    dataclass's fields. Every problem is ``error`` naming the file."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as problem:
        raise error(f"{path}: unreadable config ({problem})") from problem
    try:
        if not isinstance(raw, dict):
            raise error("config.json must hold a JSON object")
        raw = migrate(raw)
        known = {field.name for field in fields(config_class)}
        unexpected, missing = sorted(set(raw) - known), sorted(known - set(raw))
        if unexpected or missing:
            raise error(f"config fields do not match this fastprotect version: missing {missing}, unexpected {unexpected}")
        return config_class(**raw)
    except error as problem:
        raise error(f"{path}: {problem}") from None
