"""Every command and subcommand explains itself in --help, and its --help and the README agree:
each option --help lists is in the README, and each option the README gives a command exists."""

from __future__ import annotations

import concurrent.futures
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from dicomfs.cli.main import main

README = (Path(__file__).parent.parent / "README.md").read_text()

Command = tuple[str, ...]


def command_paths() -> list[Command]:
    """('index',), ..., ('remote',), ('remote', 'add'), ...: every command a user can run."""
    found: list[Command] = []
    for name, command in sorted(main.commands.items()):
        found.append((name,))
        if isinstance(command, click.Group):
            found += [(name, sub) for sub in sorted(command.commands)]
    return found


COMMANDS = command_paths()
DICOMFS = Path(sys.executable).with_name("dicomfs")  # the command users run
OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")


def spelled(command: Command) -> str:
    return " ".join(("dicomfs", *command))


@pytest.fixture(scope="module")
def helps() -> dict[Command, subprocess.CompletedProcess[str]]:
    """`dicomfs ... --help` of every command, as a user runs it (all at once: it is slow)."""

    def run(command: Command) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(DICOMFS), *command, "--help"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return dict(zip(COMMANDS, pool.map(run, COMMANDS), strict=True))


def description(help_text: str) -> str:
    """The first paragraph after the usage line."""
    after_usage = help_text.split("\n\n", 1)[1] if "\n\n" in help_text else ""
    return after_usage.split("\n\n", 1)[0].strip()


def examples(help_text: str, command: Command) -> list[str]:
    """The lines under 'Example(s):' that run this command (or, for a group, one of its own)."""
    match = re.search(r"^  Examples?:\n((?:    .*\n)+)", help_text, re.M)
    lines = [line.strip() for line in match.group(1).splitlines()] if match else []
    return [line for line in lines if (command_named_by(line) or ())[: len(command)] == command]


def help_options(help_text: str) -> list[tuple[str, ...]]:
    """Each option of the Options section, as its spellings: ('-j', '--jobs'), ('--store',)."""
    section = help_text.split("\nOptions:\n", 1)[1].split("\nCommands:\n", 1)[0]
    return [
        tuple(re.findall(r"--?[\w-]+", match))
        for match in re.findall(r"^  ((?:-\w, )?--?[\w-]+)", section, re.M)
    ]


# --- the README, as a reader finds a command in it -------------------------------------------


def sections() -> list[str]:
    return re.split(r"^## ", README, flags=re.M)[1:]


def passages(section: str) -> list[str]:
    """The paragraphs and list items of a section: the units a statement is made in."""
    return [part for part in re.split(r"\n\s*\n|\n(?=- )", section) if part.strip()]


def command_named_by(text: str) -> Command | None:
    """The command a line such as 'dicomfs remote add bay3t ...' runs."""
    words = text.split()
    for length in (3, 2):
        if words[:1] == ["dicomfs"] and tuple(words[1:length]) in COMMANDS:
            return tuple(words[1:length])
    return None


def command_lines(text: str) -> list[tuple[Command, str]]:
    """Every command the text runs, in a shell block or in inline code, with the rest of its
    line (its options and arguments, without a shell comment)."""
    found = []
    shell = "\n".join(re.findall(r"```sh\n(.*?)```", text, re.S))
    inline = re.findall(r"`(dicomfs [^`]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    for line in [*shell.splitlines(), *inline]:
        line = line.split(" #")[0].strip()
        command = command_named_by(line)
        if command is not None:
            found.append((command, line))
    return found


def heading_command(section: str) -> Command | None:
    match = re.match(r"`(dicomfs [^`]+)`", section)
    return command_named_by(match.group(1)) if match else None


def shell_commands(text: str) -> set[Command]:
    return {command for command, line in command_lines(text) if f"\n{line}" in text}


def concerns(command: Command, named: Command) -> bool:
    """What is said of `dicomfs remote` holds for its subcommands, and the other way round."""
    return named == command or named == command[:1] or named[:1] == command


def about(command: Command) -> str:
    """What the README says about a command: its own sections (their heading names it, or
    their shell blocks run it), the passages elsewhere that name it, every table, and the
    statements about every command."""
    parts = []
    for section in sections():
        if heading_command(section) == command or any(
            concerns(command, named) for named in shell_commands(section)
        ):
            parts.append(section)
            continue
        parts += [
            passage
            for passage in passages(section)
            if any(concerns(command, named) for named, _ in command_lines(passage))
        ]
    parts += [line for line in README.splitlines() if line.startswith("|")]
    parts += [p for s in sections() for p in passages(s) if "Every command" in p]
    return "\n".join(parts)


def mentions(text: str, option: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text) is not None


def options_in_code(text: str) -> set[str]:
    """Options written as inline code in prose: `--mount DIR`, `--method get`."""
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    return {span.split()[0] for span in re.findall(r"`(--[a-z][^`]*)`", prose)}


def options_the_readme_gives() -> list[tuple[frozenset[Command], str, str]]:
    """Every option the README gives to a command, as (the commands it may belong to, the
    option, where): on a line that runs one command, that command's; in prose, those of the
    commands its passage names, or else of the command its section is about."""
    given = []
    for command, line in command_lines(README):
        rest = line.removeprefix(spelled(command))
        given += [(frozenset([command]), option, line) for option in OPTION.findall(rest)]
    for section in sections():
        for passage in passages(section):
            named = {command for command, _ in command_lines(passage)}
            heading = heading_command(section)
            if heading is not None:
                named.add(heading)
            if named:
                given += [(frozenset(named), option, passage.strip().splitlines()[0])
                          for option in sorted(options_in_code(passage))]  # fmt: skip
    return given


# --- the tests ----------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_explains_the_command_with_an_example(
    helps: dict[Command, subprocess.CompletedProcess[str]], command: Command
) -> None:
    result = helps[command]
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Usage: {spelled(command)} ")
    assert len(description(result.stdout)) > 10, result.stdout
    assert examples(result.stdout, command), f"{spelled(command)} --help shows no example"


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_option_of_the_help_is_in_the_readme(
    helps: dict[Command, subprocess.CompletedProcess[str]], command: Command
) -> None:
    text = about(command)
    missing = [
        "/".join(spellings)
        for spellings in help_options(helps[command].stdout)
        if not any(mentions(text, spelling) for spelling in spellings)
    ]
    assert not missing, f"{spelled(command)}: the README does not explain {missing}"


def test_every_option_the_readme_gives_a_command_is_in_its_help(
    helps: dict[Command, subprocess.CompletedProcess[str]],
) -> None:
    known = {
        command: {spelling for option in help_options(helps[command].stdout) for spelling in option}
        for command in COMMANDS
    }
    unknown = [
        f"{option} ({' or '.join(sorted(map(spelled, commands)))}) in: {where}"
        for commands, option, where in options_the_readme_gives()
        if not any(option in known[command] for command in commands)
    ]
    assert not unknown, "\n".join(unknown)
