"""Config dataclasses, the flags generated from them, presets, round trips and validation."""

import dataclasses
import json
import re
import typing

import pytest

from agents.cli import config_from_flags, parse_train_config, run_main, train_parser
from agents.config import (
    SECTIONS,
    DQNConfig,
    NetworkConfig,
    RunConfig,
    TrainConfig,
    validate,
)
from agents.presets import PRESETS, preset_for
from agents.tuning.presets import ENV_VAR, export_best
from qnorm import QnormError, norm_names


def flag(name):
    return "--" + name.replace("_", "-")


def other_value(section, f, hint):
    """A valid value for field ``f`` that differs from its default, and its flag arguments."""
    default = f.default_factory() if f.default is dataclasses.MISSING else f.default
    choices = f.metadata.get("choices")
    if callable(choices):
        choices = choices()
    if hint is bool:
        return (not default), [flag(f.name) if not default else "--no-" + flag(f.name)[2:]]
    if typing.get_origin(hint) is tuple:
        return (8, 4, 2), [flag(f.name), "8", "4", "2"]
    if choices is not None:
        value = next(c for c in choices if c != default)
        return value, [flag(f.name), str(value)]
    if f.name == "env_id":
        return "Acrobot-v1", [flag(f.name), "Acrobot-v1"]
    if f.name == "tuned_preset_from":  # a study variant (the test gives it a tuned preset)
        return "layernorm", [flag(f.name), "layernorm"]
    if hint is str:
        return "some/dir", [flag(f.name), "some/dir"]
    if hint is int:
        return default + 3, [flag(f.name), str(default + 3)]
    if hint is float:
        return 0.123, [flag(f.name), "0.123"]
    raise AssertionError(f"no test value for {section}.{f.name}: {hint}")


ALL_FIELDS = [
    (section, f, typing.get_type_hints(cls)[f.name])
    for section, cls in SECTIONS.items()
    for f in dataclasses.fields(cls)
]


def test_sections_cover_train_config():
    assert list(SECTIONS.items()) == [
        ("run", RunConfig),
        ("network", NetworkConfig),
        ("dqn", DQNConfig),
    ]
    assert [f.name for f in dataclasses.fields(TrainConfig)] == list(SECTIONS)


@pytest.mark.parametrize(
    ("section", "f", "hint"), ALL_FIELDS, ids=[f"{s}.{f.name}" for s, f, _ in ALL_FIELDS]
)
def test_every_field_has_a_flag_that_sets_it(section, f, hint, tmp_path, monkeypatch):
    if f.name == "tuned_preset_from":  # the variant it names needs a tuned preset
        best = {"settings": {"dqn.batch_size": 32}, "trial": 1}
        export_best("CartPole-v1", "layernorm", best, 1, "study", tmp_path / "presets.json")
        monkeypatch.setenv(ENV_VAR, str(tmp_path / "presets.json"))
    value, argv = other_value(section, f, hint)
    ns = vars(train_parser().parse_args(argv))
    assert ns == {f"{section}.{f.name}": list(value) if isinstance(value, tuple) else value}
    config = config_from_flags(ns)
    assert getattr(getattr(config, section), f.name) == value
    assert type(getattr(getattr(config, section), f.name)) is type(value)


def test_no_flag_without_a_field():
    expected = {f"{section}.{f.name}" for section, f, _ in ALL_FIELDS}
    # every flag but --help writes some section.field
    dests = {a.dest for a in train_parser()._actions if a.dest not in ("help", "resume")}
    assert dests == expected


@pytest.mark.parametrize("name", ["BatchNorm", "BATCHNORM", "batchnorm"])
def test_choice_flags_take_any_case(name):
    assert parse_train_config(["--norm", name]).network.norm == "batchnorm"
    assert parse_train_config(["--optimizer", "RMSprop"]).dqn.optimizer == "rmsprop"


def test_a_flag_mistake_is_one_error_line_naming_the_choices(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_train_config(["--norm", "BogusNorm"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: argument --norm: invalid choice")
    assert "'batchnorm'" in err and "usage:" not in err


def _help_line(argv: list[str], flag: str) -> str:
    """The help text of ``flag`` in train.py's --help, joined onto one line."""
    text = " ".join(train_parser(argv and argv[1]).format_help().split())
    start = text.index(f"{flag} ", text.index("options:"))
    return text[start : text.index(" --", start + len(flag))]


def test_help_shows_the_defaults_of_the_chosen_envs_preset():
    # CartPole-v1 is the default env: its preset applies, not the dataclass defaults.
    assert "(default: 0.0023 from the CartPole-v1 preset)" in _help_line([], "--learning-rate")
    assert "(default: 50000 from the CartPole-v1 preset)" in _help_line([], "--total-timesteps")
    minatar = ["--env-id", "MinAtar/Breakout-v1"]
    line = _help_line(minatar, "--learning-rate")
    assert "(default: 0.00025 from the MinAtar/Breakout-v1 preset)" in line
    assert "(default: 'rmsprop' from the" in _help_line(minatar, "--optimizer")
    # An env without a preset shows the dataclass defaults, with no preset named.
    assert _help_line(["--env-id", "Pendulum-v1"], "--learning-rate").endswith("(default: 0.0001)")


def test_help_metavars_are_field_names_not_config_keys():
    text = train_parser().format_help()
    assert "--env-id ENV_ID" in text and "--learning-rate LEARNING_RATE" in text
    assert not re.search(r"\b(RUN|NETWORK|DQN)\.[A-Z_]+", text)


def test_bool_flags_have_a_negative_form():
    assert parse_train_config(["--no-double-dqn"]).dqn.double_dqn is False
    assert parse_train_config(["--double-dqn"]).dqn.double_dqn is True
    assert parse_train_config(["--no-progress"]).run.progress is False
    assert parse_train_config(["--input-norm"]).network.input_norm is True


def test_stable_baselines3_names():
    argv = [
        *("--learning-rate", "0.0005"),
        *("--buffer-size", "5000"),
        *("--learning-starts", "200"),
        *("--batch-size", "48"),
        *("--tau", "0.5"),
        *("--gamma", "0.95"),
        *("--train-freq", "8"),
        *("--gradient-steps", "-1"),
        *("--target-update-interval", "300"),
        *("--exploration-fraction", "0.3"),
        *("--exploration-initial-eps", "0.9"),
        *("--exploration-final-eps", "0.02"),
        *("--max-grad-norm", "5"),
        *("--hidden-sizes", "256", "256"),
        *("--norm", "batchnorm"),
        *("--norm-placement", "after"),
        *("--env-id", "MountainCar-v0"),
        *("--total-timesteps", "1234"),
        *("--seed", "7"),
        *("--num-envs", "3"),
        *("--run-dir", "runs/x"),
    ]
    config = parse_train_config(argv)
    d, n, r = config.dqn, config.network, config.run
    assert (d.learning_rate, d.buffer_size, d.learning_starts, d.batch_size) == (
        0.0005,
        5000,
        200,
        48,
    )
    assert (d.tau, d.gamma, d.train_freq, d.gradient_steps) == (0.5, 0.95, 8, -1)
    assert d.target_update_interval == 300
    assert (d.exploration_fraction, d.exploration_initial_eps) == (0.3, 0.9)
    assert (d.exploration_final_eps, d.max_grad_norm) == (0.02, 5.0)
    assert n.hidden_sizes == (256, 256)
    assert (n.norm, n.norm_placement) == ("batchnorm", "after")
    assert (r.env_id, r.total_timesteps, r.seed, r.num_envs, r.run_dir) == (
        "MountainCar-v0",
        1234,
        7,
        3,
        "runs/x",
    )
    validate(config)


def test_preset_fills_unset_flags_and_explicit_flags_win():
    config = parse_train_config(["--env-id", "CartPole-v1"])
    assert config.dqn.batch_size == 64
    assert config.dqn.learning_rate == 2.3e-3
    assert config.dqn.train_freq == 256
    assert config.run.total_timesteps == 50_000
    config = parse_train_config(["--env-id", "CartPole-v1", "--batch-size", "32"])
    assert config.dqn.batch_size == 32
    assert config.dqn.learning_rate == 2.3e-3  # the rest of the preset still applies
    config = parse_train_config(["--total-timesteps", "777", "--hidden-sizes", "64"])
    assert config.run.env_id == "CartPole-v1"  # the default env's preset applies too
    assert config.run.total_timesteps == 777
    assert config.network.hidden_sizes == (64,)
    assert config.dqn.batch_size == 64


@pytest.mark.parametrize("env_id", sorted(PRESETS))
def test_every_preset_is_a_valid_config(env_id):
    config = parse_train_config(["--env-id", env_id])
    for key, value in preset_for(env_id).items():
        section, name = key.split(".")
        assert getattr(getattr(config, section), name) == value, key
    validate(config)
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_env_without_a_preset_takes_the_defaults():
    assert preset_for("Pendulum-v1") == {}
    config = parse_train_config(["--env-id", "FrozenLake-v1"])
    expected = TrainConfig()
    expected.run.env_id = "FrozenLake-v1"
    assert config == expected


def test_preset_for_returns_a_copy():
    preset_for("CartPole-v1")["dqn.batch_size"] = 1
    assert PRESETS["CartPole-v1"]["dqn.batch_size"] == 64


@pytest.mark.parametrize(
    "argv",
    [
        ["--norm", "bogus"],
        ["--norm-placement", "middle"],
        ["--activation", "sigmoid2"],
        ["--batch-size", "many"],
        ["--hidden-sizes"],
        ["--loss", "l1"],
        ["--no-such-flag"],
    ],
)
def test_malformed_flags_exit_with_status_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_train_config(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_norm_choices_come_from_the_registry():
    for norm in norm_names():
        assert parse_train_config(["--norm", norm]).network.norm == norm


def non_default_config():
    config = TrainConfig()
    config.run = RunConfig(
        env_id="Acrobot-v1",
        total_timesteps=12_345,
        seed=42,
        num_envs=4,
        run_dir="runs/somewhere",
        eval_freq=0,
        eval_episodes=3,
        checkpoint_freq=500,
        log_freq=7,
        diagnostics_freq=0,
        device="cpu",
        torch_threads=2,
        progress=False,
    )
    config.network = NetworkConfig(
        hidden_sizes=(64, 32, 16),
        activation="tanh",
        norm="batchnorm",
        norm_placement="after",
        input_norm=True,
        dueling=True,
    )
    config.dqn = DQNConfig(
        learning_rate=3.3e-4,
        buffer_size=777,
        learning_starts=0,
        batch_size=128,
        tau=0.005,
        gamma=0.999,
        train_freq=1,
        gradient_steps=-1,
        target_update_interval=1,
        exploration_fraction=0.5,
        exploration_initial_eps=0.5,
        exploration_final_eps=0.0,
        max_grad_norm=0.5,
        double_dqn=False,
        loss="mse",
    )
    return config


@pytest.mark.parametrize("make", [TrainConfig, non_default_config])
def test_to_dict_json_from_dict_round_trips_exactly(make):
    config = make()
    text = json.dumps(config.to_dict())
    back = TrainConfig.from_dict(json.loads(text))
    assert back == config
    assert isinstance(back.network.hidden_sizes, tuple)
    assert json.dumps(back.to_dict()) == text
    if make is non_default_config:
        assert back != TrainConfig()


def test_to_dict_is_plain_json_data():
    data = non_default_config().to_dict()
    assert set(data) == {"run", "network", "dqn"}
    assert data["network"]["hidden_sizes"] == [64, 32, 16]
    assert data["dqn"]["tau"] == 0.005


def test_from_dict_fills_missing_fields_with_defaults_and_accepts_ints_for_floats():
    config = TrainConfig.from_dict({"dqn": {"tau": 1, "batch_size": 8}})
    assert config.dqn.tau == 1.0 and isinstance(config.dqn.tau, float)
    assert config.dqn.batch_size == 8
    assert config.run == RunConfig()


@pytest.mark.parametrize(
    "data",
    [
        {"extra": {}},
        {"dqn": {"batch_sise": 32}},
        {"run": {"env": "CartPole-v1"}},
        {"network": {"hidden_sizes": [64], "widths": [1]}},
    ],
)
def test_from_dict_rejects_unknown_fields(data):
    with pytest.raises(QnormError, match="no field"):
        TrainConfig.from_dict(data)


@pytest.mark.parametrize(
    "data",
    [
        {"dqn": {"batch_size": "32"}},
        {"dqn": {"batch_size": 32.0}},
        {"dqn": {"batch_size": True}},
        {"dqn": {"learning_rate": "fast"}},
        {"dqn": {"double_dqn": 1}},
        {"run": {"env_id": 3}},
        {"run": {"progress": "yes"}},
        {"network": {"hidden_sizes": 64}},
        {"network": {"hidden_sizes": ["64"]}},
        {"network": {"hidden_sizes": [64.5]}},
        {"network": "none"},
        {"run": None},
    ],
)
def test_from_dict_rejects_wrong_types(data):
    with pytest.raises(QnormError):
        TrainConfig.from_dict(data)


def test_from_dict_rejects_a_non_object():
    with pytest.raises(QnormError):
        TrainConfig.from_dict([1, 2])


def test_defaults_validate():
    validate(TrainConfig())
    validate(non_default_config())


@pytest.mark.parametrize(
    ("section", "name", "value", "message"),
    [
        ("run", "total_timesteps", 0, "total_timesteps"),
        ("run", "total_timesteps", -10, "total_timesteps"),
        ("run", "num_envs", 0, "num_envs"),
        ("run", "eval_episodes", 0, "eval_episodes"),
        ("run", "torch_threads", 0, "torch_threads"),
        ("run", "log_freq", 0, "log_freq"),
        ("run", "eval_freq", -1, "eval_freq"),
        ("run", "checkpoint_freq", -1, "checkpoint_freq"),
        ("run", "diagnostics_freq", -1, "diagnostics_freq"),
        ("dqn", "buffer_size", 0, "buffer_size"),
        ("dqn", "batch_size", 0, "batch_size"),
        ("dqn", "batch_size", -4, "batch_size"),
        ("dqn", "train_freq", 0, "train_freq"),
        ("dqn", "target_update_interval", 0, "target_update_interval"),
        ("dqn", "learning_starts", -1, "learning_starts"),
        ("dqn", "gradient_steps", 0, "gradient_steps"),
        ("dqn", "gradient_steps", -2, "gradient_steps"),
        ("dqn", "gamma", 1.01, "gamma"),
        ("dqn", "gamma", -0.1, "gamma"),
        ("dqn", "tau", 0.0, "tau"),
        ("dqn", "tau", 1.5, "tau"),
        ("dqn", "exploration_fraction", 0.0, "exploration_fraction"),
        ("dqn", "exploration_initial_eps", 1.2, "exploration_initial_eps"),
        ("dqn", "exploration_final_eps", -0.1, "exploration_final_eps"),
        ("dqn", "learning_rate", 0.0, "learning_rate"),
        ("dqn", "max_grad_norm", -1.0, "max_grad_norm"),
        ("network", "hidden_sizes", (), "hidden_sizes"),
        ("network", "hidden_sizes", (64, 0), "hidden_sizes"),
        ("network", "renorm_rmax", 0.5, "renorm_rmax >= 1"),
        ("network", "renorm_dmax", -1.0, "renorm_dmax >= 0"),
        ("network", "renorm_warmup", -1, "renorm_warmup >= 0"),
    ],
)
def test_validate_rejects_settings_that_cannot_train(section, name, value, message):
    config = TrainConfig()
    setattr(getattr(config, section), name, value)
    with pytest.raises(QnormError, match=message) as exc:
        validate(config)
    assert "\n" not in str(exc.value)


def test_validate_accepts_boundary_values():
    config = TrainConfig()
    config.dqn.gamma, config.dqn.tau, config.dqn.gradient_steps = 1.0, 1.0, -1
    config.dqn.learning_starts, config.run.eval_freq = 0, 0
    config.dqn.exploration_final_eps = 0.0
    validate(config)


def test_run_main_turns_a_user_mistake_into_exit_status_2(capsys):
    def main(argv):
        raise QnormError("the env is wrong")

    assert run_main(main, []) == 2
    err = capsys.readouterr().err
    assert err == "error: the env is wrong\n"
    assert run_main(lambda argv: 0, []) == 0

    def buggy(argv):
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError):  # bugs still raise normally
        run_main(buggy, [])


def test_batchrenorm_flags_become_the_specs_options_and_other_norms_take_none():
    from agents.network_specs import mlp_spec

    flags = ["--norm", "batchrenorm", "--renorm-warmup", "100000", "--renorm-rmax", "2"]
    spec = mlp_spec(parse_train_config([*flags, "--norm-layers", "first"]).network, 4, 2)
    assert spec.norm_options == {"warmup_steps": 100_000, "rmax": 2.0, "dmax": 5.0}
    assert spec.norm_layers == "first"
    assert mlp_spec(parse_train_config(["--norm", "batchnorm"]).network, 4, 2).norm_options == {}
