"""The configuration file: one TOML file of settings that every command reads.

Which file: --config FILE, else $DICOMFS_CONFIG, else the system's
(/etc/dicomfs/dicomfs.toml) and then the user's ($XDG_CONFIG_HOME/dicomfs/dicomfs.toml),
the user's overriding the system's key by key. A named file must exist; the other
two are read when they do.

Each key is the default of a command-line option, handed to click as its
default_map: one setting comes from the command line, else from its environment
variable ($DICOMFS_STORE, $DICOMFS_MOUNT), else from the file, else from the
option's own default. A value is checked by the option's own type, at load, so a
bad one is an error naming its file and line before any command runs, whichever
command it belongs to.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from ..net import remotes
from ..store.index.postgres_engine import where

SYSTEM_FILE = Path("/etc/dicomfs/dicomfs.toml")
ENVIRONMENT = "DICOMFS_CONFIG"
ANY = ("*",)  # a key that sets its option in every command that has it


@dataclasses.dataclass(frozen=True)
class Key:
    name: str  # as in the file: "receiver.port"
    param: str  # the option it is the default of
    form: str  # what TOML value it takes: path, text, mode, integer, flag, list, account
    commands: tuple[str, ...] = ANY  # or only these ("serve"; "remote add")
    about: str = ""  # for `dicomfs config` and the example file

    @property
    def table(self) -> str:
        return self.name.rpartition(".")[0]


KEYS = (
    Key("store", "store", "path", about="the store: DICOM files and their index"),
    Key("index", "index", "text", about="the index in PostgreSQL; none: SQLite in the store"),
    Key("mount.path", "mountpoint", "path", about="where serve mounts the views"),
    Key("mount.owner", "uid", "account", about="owner of the files in the mount"),
    Key("mount.group", "gid", "account", about="group of the files in the mount"),
    Key("mount.mode", "file_mode", "mode", about="mode of the files in the mount"),
    Key("mount.allow_other", "allow_other", "flag", about="let other users in"),
    Key("mount.allow_delete", "allow_delete", "flag", about="let rm through the mount delete"),
    Key("receiver.port", "port", "integer", ("serve",), "the port serve listens on"),
    Key("receiver.aet", "aet", "text", about="our AE title"),
    Key("receiver.bind", "bind", "text", ("serve",), "the address serve listens on"),
    Key("receiver.max_associations", "max_associations", "integer", about="served at once"),
    Key("receiver.processes", "processes", "integer", ("serve",), "receiver processes"),
    Key("receiver.allow_aet", "allow_aet", "list", about="calling AE titles let in ([]: any)"),
    Key("receiver.allow_address", "allow_address", "list", about="addresses or networks let in"),
    Key("receiver.require_user", "require_user", "flag", about="refuse senders without a user"),
    Key("receiver.tls_cert", "tls_cert", "path", about="certificate (PEM) for DICOM over TLS"),
    Key("receiver.tls_key", "tls_key", "path", about="private key (PEM) of tls_cert"),
    Key("receiver.request_timeout", "request_timeout", "text", about="to a complete request"),
    Key("receiver.pdu_timeout", "pdu_timeout", "text", about="to receive one PDU"),
    Key("receiver.idle_timeout", "idle_timeout", "text", about="an association may be quiet"),
    Key("expiry.retention", "retention", "text", about="kept this long after the last use"),
    Key("expiry.sweep_interval", "sweep_interval", "text", about="how often serve expires"),
    Key("disk.warn_free", "warn_free", "text", about="warn when less is free: 5%, 20G"),
)
REMOTES = "remotes"  # [remotes.NAME] address = "AET@HOST:PORT", move_destination = true
_REMOTE_KEYS = ("address", "move_destination")


class ConfigError(click.ClickException):
    """A file that cannot be used: the message names it, and the line where it can."""

    exit_code = 2


@dataclasses.dataclass(frozen=True)
class Setting:
    value: Any  # as the option takes it
    origin: str  # FILE:LINE


@dataclasses.dataclass
class Settings:
    files: list[Path]  # read, in order
    settings: dict[str, Setting]  # by key name
    remotes: dict[str, tuple[remotes.Remote, str]]  # name -> (peer, origin)

    def default_map(self, group: click.Group) -> dict[str, Any]:
        """click's default_map for the commands below group: each option's default,
        where the files set one."""
        mapped: dict[str, Any] = {}
        for path, command in walk(group):
            for param in command.params:
                key = key_of(path, param.name)
                if key is not None and key.name in self.settings:
                    node = mapped
                    for part in path:
                        node = node.setdefault(part, {})
                    node[param.name] = self.settings[key.name].value
        return mapped


def key_of(path: tuple[str, ...], param: str | None) -> Key | None:
    """The key that sets this option of the command at path, if any."""
    command = " ".join(path)
    for key in KEYS:
        if key.param == param and (key.commands == ANY or command in key.commands):
            return key
    return None


def walk(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command below group, with its path of names ("remote", "add")."""
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from walk(command, (*path, name))
        else:
            yield (*path, name), command


def user_file() -> Path:
    config_home = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(config_home) / "dicomfs" / "dicomfs.toml"


def files_to_read(named: Path | None) -> list[Path]:
    """The files that apply, in the order they are read."""
    source = "--config"
    if named is None and os.environ.get(ENVIRONMENT):
        named, source = Path(os.environ[ENVIRONMENT]), f"${ENVIRONMENT}"
    if named is not None:
        if not _is_file(named):
            raise ConfigError(f"configuration file {named} (from {source}) does not exist")
        return [named]
    return [path for path in (SYSTEM_FILE, user_file()) if _is_file(path)]


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except PermissionError:
        raise ConfigError(f"cannot read the configuration file {path}: permission denied "
                          f"(a file elsewhere: --config or ${ENVIRONMENT})") from None  # fmt: skip


def load(group: click.Group, named: Path | None = None) -> Settings:
    """The settings of the files that apply (see files_to_read), each value checked by
    the option it sets; ConfigError names the file and line of the first bad one."""
    settings = Settings(files_to_read(named), {}, {})
    for path in settings.files:
        _read(group, path, settings)
    # Said of the files together: the system's may give one, the user's the other.
    tls = [name for name in ("receiver.tls_cert", "receiver.tls_key") if name in settings.settings]
    if len(tls) == 1:
        raise ConfigError(f"{settings.settings[tls[0]].origin}: receiver.tls_cert and "
                          "receiver.tls_key go together: give both, or neither")  # fmt: skip
    return settings


def _read(group: click.Group, path: Path, settings: Settings) -> None:
    try:
        text = path.read_text(encoding="utf-8")
        document = tomllib.loads(text)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        at = re.search(r"\(at line (\d+), column \d+\)$", str(exc))
        raise ConfigError(f"{path}{':' + at[1] if at else ''}: not valid TOML: {exc}") from None
    lines = _lines_of_keys(text)

    def where(name: str) -> str:
        line = lines.get(name) or lines.get(name.rpartition(".")[0])
        return f"{path}:{line}" if line else str(path)

    for name, value in _flatten(document):
        if name == REMOTES or name.startswith(REMOTES + "."):
            continue
        key = next((key for key in KEYS if key.name == name), None)
        if key is None:
            raise ConfigError(f"{where(name)}: unknown key {name!r}{_suggestion(name)}")
        try:
            checked = _checked(group, key, value)
        except click.BadParameter as exc:
            raise ConfigError(f"{where(name)}: {name}: {exc.message}") from None
        settings.settings[name] = Setting(checked, where(name))
    for name, fields in _remotes_of(document, where).items():
        settings.remotes[name] = fields


def _flatten(document: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for name, value in document.items():
        full = f"{prefix}{name}"
        if isinstance(value, dict) and full != REMOTES and not full.startswith(REMOTES + "."):
            yield from _flatten(value, full + ".")
        else:
            yield full, value


def _suggestion(name: str) -> str:
    known = [key.name for key in KEYS] + [REMOTES]
    close = (
        [key.name for key in KEYS if key.name.rpartition(".")[2] == name.rpartition(".")[2]]
        or difflib.get_close_matches(name, known, n=1)
        or difflib.get_close_matches(name.split(".")[0], [REMOTES], n=1)
    )
    if close:
        return f": did you mean {close[0]!r}?"
    tables = sorted({key.table for key in KEYS if key.table} | {REMOTES})
    return f" (the keys are listed by 'dicomfs config'; tables: {', '.join(tables)})"


def _checked(group: click.Group, key: Key, value: Any) -> Any:
    """value as the option takes it, checked by the option's own type."""
    expected = {"path": str, "text": str, "mode": str, "integer": int, "flag": bool, "list": list}
    if key.form == "account":
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise click.BadParameter("give a name or a number")
    elif not isinstance(value, expected[key.form]) or (key.form == "integer" and value is True):
        raise click.BadParameter(_form_help(key.form))
    if key.form == "path":
        # Whether it exists, and may be read, is for the command that uses it to say:
        # the service's store is closed to the lab's users, who read the file too.
        value = os.path.expanduser(value)
        if not os.path.isabs(value):
            raise click.BadParameter(f"{value!r} is not an absolute path")
        return value
    if key.form == "flag":
        return value
    param = _command_and_param(group, key)[1]
    if key.form == "list":
        if not all(isinstance(item, str) for item in value):
            raise click.BadParameter('give a list of strings, such as ["A", "B"]')
        for item in value:
            param.type.convert(item, param, None)
        return value
    param.type.convert(value, param, None)
    return value


def _form_help(form: str) -> str:
    return {
        "path": 'give a path in quotes, such as "/srv/dicom"',
        "text": 'give a value in quotes, such as "7d"',
        "integer": "give a whole number, such as 104",
        "flag": "give true or false",
        "mode": 'give it in quotes, such as "0440"',
        "list": 'give a list, such as ["A", "B"]',
    }[form]


def _command_and_param(group: click.Group, key: Key) -> tuple[click.Command, click.Parameter]:
    """The first command that has the option the key sets, and the option."""
    for path, command in walk(group):
        for param in command.params:
            if key_of(path, param.name) is key:
                return command, param
    raise LookupError(f"no option takes {key.name}")  # a key table out of step


def _remotes_of(document: dict[str, Any], where: Any) -> dict[str, tuple[remotes.Remote, str]]:
    table = document.get(REMOTES, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{where(REMOTES)}: [{REMOTES}] is a table of [remotes.NAME] tables")
    found = {}
    for name, fields in table.items():
        full = f"{REMOTES}.{name}"
        if not isinstance(fields, dict):
            raise ConfigError(f'{where(full)}: {full} is a table: address = "AET@HOST:PORT"')
        unknown = sorted(set(fields) - set(_REMOTE_KEYS))
        if unknown:
            named = f"{full}.{unknown[0]}"
            raise ConfigError(f"{where(named)}: unknown key {named!r} "
                              f"(a remote has: {', '.join(_REMOTE_KEYS)})")  # fmt: skip
        moving = fields.get("move_destination", False)
        if not isinstance(moving, bool):
            raise ConfigError(f"{where(full + '.move_destination')}: {full}.move_destination: "
                              "give true or false")  # fmt: skip
        try:
            address = fields["address"]
            peer = remotes.parse(name, str(address))
        except KeyError:
            raise ConfigError(f'{where(full)}: {full} needs address = "AET@HOST:PORT"') from None
        except remotes.BadRemote as exc:
            raise ConfigError(f"{where(full + '.address')}: {full}: {exc}") from None
        found[name] = (dataclasses.replace(peer, move_destination=moving), where(full))
    return found


_TABLE = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]")
_ASSIGNMENT = re.compile(
    r"^\s*((?:[A-Za-z0-9_-]+|\"[^\"]*\")(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"))*)\s*="
)


def _lines_of_keys(text: str) -> dict[str, int]:
    """Line numbers of the tables and keys of a TOML text, by dotted name (tomllib
    keeps none): enough to point at a bad value."""
    lines: dict[str, int] = {}
    table = ""
    for number, line in enumerate(text.splitlines(), 1):
        header = _TABLE.match(line)
        if header:
            table = _dotted(header[1])
            lines.setdefault(table, number)
            continue
        assignment = _ASSIGNMENT.match(line)
        if assignment:
            key = _dotted(assignment[1])
            lines.setdefault(f"{table}.{key}" if table else key, number)
    return lines


def _dotted(name: str) -> str:
    return ".".join(part.strip().strip('"') for part in name.split("."))


@dataclasses.dataclass(frozen=True)
class Effective:
    key: Key
    value: Any  # None: not set
    origin: str  # "$DICOMFS_STORE", "FILE:LINE" or "default"


def effective(group: click.Group, settings: Settings) -> list[Effective]:
    """Every key's value as the commands use it, and where it comes from (the
    command line aside: each command's own); the index's URL without its password."""
    return [
        dataclasses.replace(row, value=where(row.value))
        if row.key.name == "index" and row.value else row
        for row in _effective(group, settings)
    ]  # fmt: skip


def _effective(group: click.Group, settings: Settings) -> list[Effective]:
    found = []
    for key in KEYS:
        command, param = _command_and_param(group, key)
        envvar = param.envvar if isinstance(param.envvar, str) else None
        if envvar and os.environ.get(envvar):
            found.append(Effective(key, os.environ[envvar], f"${envvar}"))
        elif key.name in settings.settings:
            setting = settings.settings[key.name]
            found.append(Effective(key, setting.value, setting.origin))
        else:
            default = param.get_default(click.Context(command), call=True)
            found.append(Effective(key, _plain(default, key), "default"))
    return found


def _plain(default: Any, key: Key) -> Any:
    """An option's default as the file would write it; None when it has none (click
    marks that with a sentinel of its own)."""
    if key.form == "list":
        return list(default) if isinstance(default, list | tuple) else []
    if key.form == "flag":
        return default is True
    if isinstance(default, Path):
        return str(default)
    return default if isinstance(default, str | int) else None


def toml_value(value: Any) -> str:
    """A value written as TOML (its strings are JSON's)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value), ensure_ascii=False)
