"""Command-line flags generated from the config dataclasses, so flags never drift from them."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing

from agents.config import SECTIONS, TrainConfig, coerce
from agents.presets import preset_for
from qnorm import QnormError


def _choices(meta: dict):
    choices = meta.get("choices")
    if callable(choices):
        choices = choices()
    return list(choices) if choices is not None else None


def add_section_flags(parser: argparse.ArgumentParser, section: str, cls) -> None:
    """One ``--dashed-name`` flag per field of dataclass ``cls``, stored as ``section.field``."""
    group = parser.add_argument_group(f"{section} ({cls.__doc__.strip()})")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        kwargs: dict = {"dest": f"{section}.{f.name}", "default": argparse.SUPPRESS}
        kwargs["help"] = f"{f.metadata.get('help', '')} (default: {_default_text(f)})"
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(hint) is tuple:
            kwargs.update(nargs="+", type=typing.get_args(hint)[0], metavar="N")
        else:
            kwargs["type"] = hint
            kwargs["choices"] = _choices(f.metadata)
        group.add_argument("--" + f.name.replace("_", "-"), **kwargs)


def _default_text(f: dataclasses.Field) -> str:
    default = f.default_factory() if f.default is dataclasses.MISSING else f.default
    if isinstance(default, tuple):
        return " ".join(map(str, default))
    return repr(default) if isinstance(default, str) else str(default)


def train_parser() -> argparse.ArgumentParser:
    """The parser for scripts/train.py: every TrainConfig field as a flag."""
    parser = argparse.ArgumentParser(
        description="Train a DQN agent with a normalized Q-network.",
        epilog="Flags left unset take the env's preset (agents/presets.py), then the "
        "defaults shown. The resolved config is written to the run's config.json.",
    )
    for section, cls in SECTIONS.items():
        add_section_flags(parser, section, cls)
    return parser


def config_from_flags(flags: dict[str, object]) -> TrainConfig:
    """Defaults, overlaid with the env's preset, overlaid with the given ``section.field`` flags."""
    env_id = flags.get("run.env_id", TrainConfig().run.env_id)
    settings = {**preset_for(str(env_id)), **flags}
    config = TrainConfig()
    for key, value in settings.items():
        section, _, name = key.partition(".")
        cls = SECTIONS.get(section)
        hints = typing.get_type_hints(cls) if cls else {}
        if name not in hints:
            raise QnormError(f"unknown setting {key!r}; settings are named like 'dqn.batch_size'")
        setattr(getattr(config, section), name, coerce(hints[name], value, key))
    return config


def parse_train_config(argv: list[str] | None = None) -> TrainConfig:
    """Parse ``argv`` into a TrainConfig (argparse exits with status 2 on malformed flags)."""
    return config_from_flags(vars(train_parser().parse_args(argv)))


def run_main(main, argv: list[str] | None = None) -> int:
    """Run a script's ``main``; a user's mistake becomes ``error: ...`` and exit status 2."""
    try:
        return main(argv)
    except QnormError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
