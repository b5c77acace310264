"""Every registered CLI command has help text with an example and is mentioned in the README."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.main import get_command

from engine.cli import app

README = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")


def _commands() -> list[tuple[str, object]]:
    root = get_command(app)
    found = []

    def walk(group: object, prefix: str) -> None:
        for name, cmd in group.commands.items():  # type: ignore[attr-defined]
            path = f"{prefix} {name}".strip()
            if hasattr(cmd, "commands"):
                walk(cmd, path)
            else:
                found.append((path, cmd))

    walk(root, "")
    return found


def test_every_command_has_help_with_an_example() -> None:
    commands = _commands()
    assert len(commands) >= 6
    for path, cmd in commands:
        text = cmd.help or ""  # type: ignore[attr-defined]
        assert text.strip(), f"juki {path} has no help text"
        assert "Example: juki " + path in text, f"juki {path}: help lacks 'Example: juki {path}'"


def test_every_command_is_in_the_readme() -> None:
    for path, _ in _commands():
        assert f"juki {path}" in README, f"README does not mention `juki {path}`"


def test_typer_app_is_the_console_script() -> None:
    assert isinstance(app, typer.Typer)
