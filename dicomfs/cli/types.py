"""The command line's option types: a bad value is a one-line error before anything
runs, whether it came from the command line or from the configuration file."""

from __future__ import annotations

import grp
import ipaddress
import pwd
from collections.abc import Callable
from typing import Any

import click

from ..net import remotes
from ..store import diskspace, sharing
from . import timeparse


class Parsed(click.ParamType):
    """A value `parse` reads from its text, whose ValueError says what is wrong with
    it; a value that is `made` already (a default) is taken as it is."""

    def __init__(self, name: str, parse: Callable[[str], Any], made: type | None = None) -> None:
        self.name = name
        self.parse = parse
        self.made = made

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if self.made is not None and isinstance(value, self.made):
            return value
        try:
            return self.parse(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class AETitle(Parsed):
    """An AE title as DICOM allows it (see remotes.ae_title)."""

    def __init__(self) -> None:
        super().__init__("aet", remotes.ae_title)


class IPAddress(click.ParamType):
    name = "address"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return str(ipaddress.ip_address(str(value).strip()))
        except ValueError:
            self.fail(
                f"{value!r} is not an IP address: give one of this machine's, "
                "or 0.0.0.0 for all of them",
                param,
                ctx,
            )


class Duration(click.ParamType):
    """7d, 36h, 90m, 30s -> seconds, more than none."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float):
            return value
        try:
            seconds = timeparse.duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if seconds <= 0:
            self.fail(f"{value!r} is no time at all: give more, such as 7d, 36h, 90m", param, ctx)
        return seconds


def seconds(value: float) -> str:
    """A default of Duration as --help shows it: 10.0 -> '10s'."""
    return f"{value:g}s"


class Moment(Parsed):
    """A date or time as users type it (see timeparse) -> a unix time. `parse` says
    what a duration means there: that long ago, or from now."""

    def __init__(self, parse: Callable[[str], float]) -> None:
        super().__init__("time", parse, float)


class FileMode(click.ParamType):
    name = "mode"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            mode = int(str(value), 8)
        except ValueError:
            self.fail(f"{value!r} is not an octal mode such as 0440", param, ctx)
        if not 0 <= mode <= 0o777:
            self.fail(f"{value!r} is not a file mode (0000 to 0777)", param, ctx)
        return mode


class Account(click.ParamType):
    """A user or group, by name or number -> its number."""

    def __init__(self, kind: str) -> None:
        self.kind = kind  # "user" or "group"
        self.name = kind

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip()
        if text.isdigit() and int(text) < 2**32 - 1:
            return int(text)
        try:
            entry = pwd.getpwnam(text).pw_uid if self.kind == "user" else grp.getgrnam(text).gr_gid
        except KeyError:
            self.fail(f"there is no {self.kind} {text!r} on this machine", param, ctx)
        return int(entry)


class DiskFloor(Parsed):
    """5% or 20G -> diskspace.Floor."""

    def __init__(self) -> None:
        super().__init__("amount", diskspace.Floor.parse, diskspace.Floor)


class Network(click.ParamType):
    """An address or a network: 10.1.2.3, 10.1.0.0/16, fd00::/8."""

    name = "network"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            ipaddress.ip_network(str(value).strip(), strict=False)
        except ValueError as exc:
            self.fail(f"{value!r} is not an address or a network: {exc}", param, ctx)
        return str(value).strip()


class IndexURL(click.ParamType):
    """A PostgreSQL database's URL: postgresql://USER@HOST:PORT/DATABASE."""

    name = "url"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip()
        if not text.startswith(("postgresql://", "postgres://")):
            self.fail(
                f"{value!r} is not a PostgreSQL database's URL: "
                "postgresql://USER@HOST:PORT/DATABASE",
                param,
                ctx,
            )
        return text


class ServeName(click.ParamType):
    """A serve's name among those sharing a store: letters, digits, . _ -."""

    name = "name"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip()
        if not sharing.NAME.match(text):
            self.fail(f"{value!r} is not a name: letters, digits, '.', '_' and '-'", param, ctx)
        return text
