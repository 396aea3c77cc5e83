"""The tuned presets as a Markdown table (results/tuning/presets.md), for the README."""

from __future__ import annotations

from pathlib import Path

# (column, setting) pairs; "a|b" shows two settings in one column.
COLUMNS = (
    ("learning rate (schedule)", "dqn.learning_rate|dqn.lr_schedule"),
    ("batch", "dqn.batch_size"),
    ("train freq / gradient steps", "dqn.train_freq|dqn.gradient_steps"),
    ("target update", "dqn.target_update_interval"),
    ("n-step", "dqn.n_step"),
    ("exploration fraction / final eps", "dqn.exploration_fraction|dqn.exploration_final_eps"),
    ("widths", "network.hidden_sizes"),
    ("Adam beta1", "dqn.adam_beta1"),
    ("norm momentum", "network.norm_momentum"),
)


def _shown(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list | tuple):
        return "x".join(str(v) for v in value)
    return str(value)


def _cell(settings: dict, keys: str) -> str:
    values = [settings.get(key) for key in keys.split("|")]
    if all(value is None for value in values):
        return "-"
    return " / ".join("-" if value is None else _shown(value) for value in values)


def presets_table(presets: dict) -> str:
    """One row per env and variant: the exported trial, its scores, its settings, and any
    settings amended after tuning (with their evidence below the table)."""
    header = ["env", "variant", "trials", "trial", "mean over its seeds", "seeds' scores"]
    names = [name for name, _ in COLUMNS] + ["amended after tuning"]
    lines = ["| " + " | ".join(header + names) + " |", "|" + "---|" * (len(header) + len(names))]
    for env_id, variants in presets.items():
        for variant, entry in variants.items():
            scores = ", ".join(f"{score:.1f}" for score in entry.get("scores", [entry["score"]]))
            row = [env_id, variant, str(entry["trials"]), str(entry["trial"])]
            row += [f"{entry['score']:.1f}", scores]
            row += [_cell(entry["settings"], keys) for _, keys in COLUMNS]
            row.append(_amended(entry))
            lines.append("| " + " | ".join(row) + " |")
    notes = [
        f"- {env_id} {variant}: {_amended(entry)}, because {entry['amended_because']}"
        for env_id, variants in presets.items()
        for variant, entry in variants.items()
        if entry.get("amended")
    ]
    table = "\n".join(lines) + "\n"
    if notes:
        table += "\nAmended after tuning:\n\n" + "\n".join(notes) + "\n"
    return table


def _amended(entry: dict) -> str:
    """The settings added after tuning, as ``key value`` pairs (- for none)."""
    amended = entry.get("amended", {})
    return ", ".join(f"{key} {_shown(value)}" for key, value in amended.items()) or "-"


def write_presets_table(presets: dict, path: Path) -> None:
    """Write ``presets_table`` to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(presets_table(presets))
