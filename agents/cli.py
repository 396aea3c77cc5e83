"""Command-line flags generated from the config dataclasses, so flags never drift from them."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import sys
import typing
from pathlib import Path

from agents.config import SECTIONS, TrainConfig, coerce
from agents.interrupts import Interrupted
from agents.presets import preset_for, tuned_preset_for
from qnorm import QnormError


class ArgumentParser(argparse.ArgumentParser):
    """An argparse parser whose usage mistakes are one ``error: ...`` line and exit status 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _choices(meta: dict):
    choices = meta.get("choices")
    if callable(choices):
        choices = choices()
    return list(choices) if choices is not None else None


def _any_case(choices: list[str]):
    """A flag type that maps a name to its choice whatever its case (``BatchNorm``)."""
    by_lower = {choice.lower(): choice for choice in choices}

    def canonical(text: str) -> str:
        return by_lower.get(text.lower(), text)  # an unknown name fails argparse's choices

    return canonical


def add_section_flags(
    parser: argparse.ArgumentParser, section: str, cls, preset: dict, env_id: str
) -> None:
    """One ``--dashed-name`` flag per field of dataclass ``cls``, stored as ``section.field``.

    The help shows the default that applies for ``env_id``: its preset's value, if any.
    """
    group = parser.add_argument_group(f"{section} ({cls.__doc__.strip()})")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        key = f"{section}.{f.name}"
        kwargs: dict = {"dest": key, "default": argparse.SUPPRESS, "metavar": f.name.upper()}
        default = _value_text(preset[key]) if key in preset else _value_text(_default(f))
        origin = f" from the {env_id} preset" if key in preset else ""
        kwargs["help"] = f"{f.metadata.get('help', '')} (default: {default}{origin})"
        choices = _choices(f.metadata)
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
            del kwargs["metavar"]
        elif typing.get_origin(hint) is tuple:
            kwargs.update(nargs="+", type=typing.get_args(hint)[0], metavar="N")
        elif choices is not None:
            kwargs.update(type=_any_case(choices), choices=choices)
            del kwargs["metavar"]  # argparse shows the choices instead
        else:
            kwargs["type"] = hint
        group.add_argument("--" + f.name.replace("_", "-"), **kwargs)


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def _value_text(value) -> str:
    if isinstance(value, tuple | list):
        return " ".join(map(str, value))
    return repr(value) if isinstance(value, str) else str(value)


def train_parser(env_id: str | None = None) -> ArgumentParser:
    """The parser for scripts/train.py: every TrainConfig field as a flag."""
    env_id = env_id or TrainConfig().run.env_id
    preset = preset_for(env_id)
    parser = ArgumentParser(
        description="Train a DQN agent with a normalized Q-network.",
        epilog=f"The defaults shown are those for --env-id {env_id}"
        + (" (its preset in agents/presets.py, then the dataclass defaults)" if preset else "")
        + "; add --env-id ENV to --help to see another env's. Flags win over the preset. "
        "The resolved config is written to the run's config.json.",
    )
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        default=argparse.SUPPRESS,
        help="continue RUN_DIR from its training-state snapshot, with its own config.json "
        "(only --total-timesteps, to extend it, and --progress may be given too)",
    )
    for section, cls in SECTIONS.items():
        add_section_flags(parser, section, cls, preset, env_id)
    return parser


def _env_id_in(argv: list[str] | None) -> str | None:
    """The ``--env-id`` in ``argv``, read before the full parser is built."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--env-id", default=None)
    return early.parse_known_args(argv)[0].env_id


def config_from_flags(flags: dict[str, object]) -> TrainConfig:
    """Defaults, overlaid with the env's preset, overlaid with the given ``section.field`` flags."""
    env_id = str(flags.get("run.env_id", TrainConfig().run.env_id))
    settings = {**preset_for(env_id), **flags}
    if coerce(bool, settings.get("run.tuned_preset", True), "run.tuned_preset"):
        settings = {**preset_for(env_id), **tuned_preset_for(env_id, settings), **flags}
    elif settings.get("run.tuned_preset_from"):
        raise QnormError("--tuned-preset-from takes a tuned preset: drop --no-tuned-preset")
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
    return parse_train_command(argv)[0]


def parse_train_command(argv: list[str] | None = None) -> tuple[TrainConfig, bool]:
    """scripts/train.py's arguments: the config to train, and whether it resumes a run."""
    flags = vars(train_parser(_env_id_in(argv)).parse_args(argv))
    run_dir = flags.pop("resume", None)
    if run_dir is None:
        return config_from_flags(flags), False
    return resume_config(run_dir, flags), True


# What a resumed run may change: how long it trains, and how it reports progress.
RESUME_FLAGS = ("run.total_timesteps", "run.progress")


def resume_config(run_dir: str, flags: dict[str, object]) -> TrainConfig:
    """The config a run was started with, from its config.json, with ``flags`` applied."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise QnormError(f"{run_dir} is not a qnorm run directory: it has no config.json")
    try:
        config = TrainConfig.from_dict(json.loads(path.read_text()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError, AttributeError) as exc:
        raise QnormError(f"{path} is unreadable or not a training config: {exc}") from None
    except QnormError as exc:  # unknown fields or values out of range
        raise QnormError(f"{path} is not a valid training config: {exc}") from None
    refused = [key for key in flags if key not in RESUME_FLAGS]
    if refused:
        names = ", ".join("--" + key.partition(".")[2].replace("_", "-") for key in refused)
        raise QnormError(
            f"--resume continues the run as configured in {path}; {names} would change the "
            "experiment (only --total-timesteps and --progress may be given)"
        )
    for key, value in flags.items():
        section, _, name = key.partition(".")
        setattr(getattr(config, section), name, value)
    config.run.run_dir = str(run_dir)
    return config


def parse_settings(items: list[str]) -> dict[str, object]:
    """``section.field=value`` items as settings; values are Python literals where they parse."""
    settings: dict[str, object] = {}
    for item in items:
        key, _, text = item.partition("=")
        try:
            settings[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            settings[key] = text
    return settings


def run_main(main, argv: list[str] | None = None) -> int:
    """Run a script's ``main``; a user's mistake becomes ``error: ...`` and exit status 2."""
    try:
        return main(argv)
    except QnormError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Interrupted as stop:  # training saved its final checkpoint on the way out
        print(stop.message(), file=sys.stderr)
        return stop.exit_status
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
