"""Each default is written once, in config.py: the receiver, the puller and the commands use
it, --help shows it and the README quotes it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from dicomfs import config
from dicomfs.net import puller
from dicomfs.net.receiver import Receiver
from dicomfs.net.wire import Timeouts

README = (Path(__file__).parent.parent / "README.md").read_text()


def help_of(*command: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "dicomfs", *command, "--help"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def one_line(text: str) -> str:
    return " ".join(text.split())  # click and the README wrap where they like


def default_of(help_text: str, option: str) -> str:
    """The default that --help shows for an option, from its entry under Options."""
    options = help_text.split("\nOptions:\n", 1)[1]
    for entry in re.split(r"\n(?=  -)", options):
        if re.match(rf"\s*(-\w, )?{option}\b", entry):
            match = re.search(r"\[default: ([^];]+)", one_line(entry))
            assert match, f"{option} shows no default"
            return match.group(1)
    raise AssertionError(f"no {option} in the help")


@pytest.fixture(scope="module")
def serve_help() -> str:
    return help_of("serve")


@pytest.fixture(scope="module")
def pull_help() -> str:
    return help_of("pull")


def test_serve_shows_the_defaults_of_config(serve_help: str) -> None:
    assert default_of(serve_help, "--port") == str(config.PORT)
    assert default_of(serve_help, "--aet") == config.AE_TITLE
    assert default_of(serve_help, "--bind") == config.BIND
    assert default_of(serve_help, "--max-associations") == str(config.MAX_ASSOCIATIONS)
    assert default_of(serve_help, "--request-timeout") == f"{config.ASSOCIATION_REQUEST_TIMEOUT:g}s"
    assert default_of(serve_help, "--pdu-timeout") == f"{config.PDU_TIMEOUT:g}s"
    assert default_of(serve_help, "--idle-timeout") == f"{config.IDLE_TIMEOUT:g}s"
    assert f"port {config.PORT}, AE title {config.AE_TITLE}" in serve_help  # its example


def test_pull_shows_the_defaults_of_config(pull_help: str) -> None:
    assert default_of(pull_help, "--port") == str(config.PORT)
    assert default_of(pull_help, "--aet") == config.AE_TITLE
    assert default_of(pull_help, "--bind") == config.BIND


def test_the_summary_of_every_command_gives_the_port() -> None:
    assert f"receive on port {config.PORT}" in one_line(help_of())


def test_the_readme_quotes_the_defaults_of_config() -> None:
    text = one_line(README)
    assert f"receives DICOM on port {config.PORT} as AE title `{config.AE_TITLE}`" in text
    assert f"| AE title | `{config.AE_TITLE}`" in text
    assert f"| port | `{config.PORT}`" in text
    assert f"`--max-associations` (default {config.MAX_ASSOCIATIONS})" in text
    for option, seconds in (
        ("--request-timeout", config.ASSOCIATION_REQUEST_TIMEOUT),
        ("--pdu-timeout", config.PDU_TIMEOUT),
        ("--idle-timeout", config.IDLE_TIMEOUT),
    ):
        assert f"| `{option}` | {seconds:g} s |" in text


def test_the_receiver_and_the_puller_start_from_the_same_defaults(store: Path) -> None:
    options = puller.PullOptions()
    assert (options.our_aet, options.port, options.bind) == (
        config.AE_TITLE, config.PORT, config.BIND)  # fmt: skip
    assert Timeouts() == Timeouts(
        config.ASSOCIATION_REQUEST_TIMEOUT, config.PDU_TIMEOUT, config.IDLE_TIMEOUT
    )
    from dicomfs.store.writer import IndexWriter

    writer = IndexWriter(store)
    try:
        receiver = Receiver(store, writer)
        assert receiver.aet == config.AE_TITLE
        assert receiver.gate.limit == config.MAX_ASSOCIATIONS
        assert receiver.timeouts == Timeouts()
    finally:
        writer.close()
