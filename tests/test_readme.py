"""Every command is documented in the README, with an example."""

from __future__ import annotations

from pathlib import Path

from dicomfs.cli.main import main

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_every_command_has_a_readme_section_and_example() -> None:
    for name in main.commands:
        assert f"`dicomfs {name}" in README, name
        assert f"\ndicomfs {name} " in README, name


def test_readme_shows_the_two_commands_first() -> None:
    first_block = README.split("```sh", 1)[1].split("```", 1)[0]
    assert "scripts/run" in first_block
    assert "scripts/test" in first_block
