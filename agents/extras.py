"""The install command for each optional extra, worded as the README gives it."""

from __future__ import annotations


def install_command(extra: str) -> str:
    """The command that installs qnorm's optional ``extra`` into a checkout's environment."""
    return f"pip install -e '.[{extra}]'"
