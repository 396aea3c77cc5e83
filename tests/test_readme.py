"""The README's Python API snippet runs as written."""

import re
from pathlib import Path

from agents.study.grid import VARIANTS

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_api_snippet_acts_on_one_cartpole_observation(capsys):
    snippet = next(b for b in python_blocks() if "greedy_action" in b)
    namespace: dict = {}
    exec(compile(snippet, str(README), "exec"), namespace)
    assert isinstance(namespace["action"], int)
    assert namespace["net"].training is True  # acting restored the caller's train mode
    assert namespace["q"].shape == (2,)
    assert namespace["q_batch"].shape == (1, 2)
    assert namespace["q_lagged"].shape == (8, 2)
    printed = capsys.readouterr().out.split()
    assert printed == [str(namespace["action"]), "True"]


def test_result_tables_in_the_readme_match_the_committed_results():
    """Every results row and verdict quoted in the README is verbatim in a results/*/tables.md."""
    results = README.parent / "results"
    committed = {
        line for path in results.glob("*/tables.md") for line in path.read_text().splitlines()
    }
    quoted = [
        line
        for line in README.read_text().splitlines()
        if line.startswith("Highest mean final return:")
        or any(line.startswith(f"| {variant} |") for variant in VARIANTS)
    ]
    assert len(quoted) >= 20  # the README does quote the study
    assert [line for line in quoted if line not in committed] == []
