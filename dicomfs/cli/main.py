"""The `dicomfs` command line: parses options, builds objects, calls the work."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sqlite3
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from .. import __version__, config
from ..net import remotes
from ..store import catalog, diskspace, modes, running, search, sharing
from ..store.files import UnsafeStore, check_own_dirs
from ..store.index import INDEX_DIR, INDEX_VARIABLE, Index, IndexUnusable, binding, to_postgres
from ..store.indexer import import_paths, reconcile
from . import configfile, output, timeparse
from .types import (
    Account,
    AETitle,
    DiskFloor,
    Duration,
    FileMode,
    IndexURL,
    IPAddress,
    Moment,
    Network,
    ServeName,
    seconds,
)  # fmt: skip

F = TypeVar("F", bound=Callable[..., Any])

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
DAY = 86400.0


class UsageError(click.ClickException):
    """A usage error as one line (click's own prints the usage block above it)."""

    exit_code = 2


@contextlib.contextmanager
def _one_line_errors() -> Iterator[None]:
    """Every error is one line with its values escaped. Click puts a usage block above
    a bad option value; the user needs the line that says what is wrong, and where
    to read more."""
    try:
        yield
    except click.exceptions.NoArgsIsHelpError:
        raise  # shows the help, as asked
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} -h')" if exc.ctx else ""
        raise UsageError(output.printable(exc.format_message()) + hint) from None
    except click.ClickException as exc:
        if type(exc) is click.ClickException or isinstance(exc, UsageError):
            raise type(exc)(output.printable(exc.message)) from None
        raise


VERBOSE_HELP = "More log output (-vv for debug)."
VERBOSITY = "dicomfs.verbose"  # in ctx.meta: the -v counted so far


def set_verbosity(verbose: int) -> None:
    root = logging.getLogger()
    root.setLevel(max(logging.WARNING - 10 * verbose, logging.DEBUG))
    # pydicom logs every odd value it meets; the index reports what matters.
    logging.getLogger("pydicom").setLevel(logging.WARNING if verbose >= 2 else logging.ERROR)
    for handler in root.handlers:
        handler.removeFilter(_WITHOUT_TRACEBACK)
        if verbose < 2:
            handler.addFilter(_WITHOUT_TRACEBACK)


def _more_verbose(ctx: click.Context, param: click.Parameter, count: int) -> None:
    """-v after a command adds to any before it: `dicomfs -v serve -v` is -vv."""
    if count:
        ctx.meta[VERBOSITY] = ctx.meta.get(VERBOSITY, 0) + count
        set_verbosity(ctx.meta[VERBOSITY])


CONFIG_HELP = (
    f"The configuration file.  [default: ${configfile.ENVIRONMENT}, else "
    f"{configfile.SYSTEM_FILE} and ~/.config/dicomfs/dicomfs.toml]"
)
NAMED_CONFIG = "dicomfs.config"  # in ctx.meta: the file --config named before the command
SETTINGS = "dicomfs.settings"  # in ctx.meta: the configuration file's (configfile.Settings)


def _use_config(ctx: click.Context, param: click.Parameter, named: Path | None) -> None:
    """--config, read before any other option: the file's settings become the options'
    defaults (click's default_map), so that the command line still overrides them."""
    if isinstance(ctx.command, click.Group):  # `dicomfs --config F serve`: F is for serve
        if named is not None:
            ctx.meta[NAMED_CONFIG] = named
        return
    group = ctx.find_root().command
    assert isinstance(group, click.Group)
    loaded = configfile.load(group, named or ctx.meta.get(NAMED_CONFIG))
    ctx.meta[SETTINGS] = loaded
    remotes.configure({name: peer for name, (peer, _) in loaded.remotes.items()})
    defaults = loaded.default_map(group)
    for name in _command_names(ctx):
        defaults = defaults.get(name, {})
    ctx.default_map = defaults


def _command_names(ctx: click.Context) -> tuple[str, ...]:
    """`dicomfs remote add` -> ("remote", "add"), however dicomfs itself was called."""
    names: list[str] = []
    while ctx.parent is not None:
        names.insert(0, ctx.info_name or "")
        ctx = ctx.parent
    return tuple(names)


def config_option() -> click.Option:
    return click.Option(
        ["--config"], type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
        is_eager=True, expose_value=False, callback=_use_config, help=CONFIG_HELP,
    )  # fmt: skip


def settings() -> configfile.Settings:
    """The configuration file's settings, read at the start of the command."""
    return click.get_current_context().meta.get(SETTINGS) or configfile.Settings([], {}, {})


def from_config(name: str) -> str:
    """Where the configuration file sets the option `name` of this command: FILE:LINE."""
    ctx = click.get_current_context()
    key = configfile.key_of(_command_names(ctx), name)
    setting = settings().settings.get(key.name) if key else None
    return setting.origin if setting else "the configuration file"


class Commands(click.Group):
    """The `dicomfs` group: its errors and those of every command are one line, and
    every command takes -v, after it as well as before it, and --config."""

    group_class = type  # `dicomfs remote` is one of these too

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        verbose = click.Option(["-v", "--verbose"], count=True, expose_value=False,
                               callback=_more_verbose, help=VERBOSE_HELP)  # fmt: skip
        cmd.params.extend([config_option(), verbose])
        super().add_command(cmd, name)

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        with _one_line_errors():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        with _one_line_errors():
            return super().invoke(ctx)


class PrintableFormatter(logging.Formatter):
    """Log lines carry AE titles, usernames and reasons from the network: the message is
    escaped so that it cannot rewrite the terminal or forge a line. A traceback may quote
    such values too: its lines are escaped and indented, so none can pass for a log line."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return output.printable(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        text = super().formatException(ei)
        return "\n".join(f"  | {output.printable(line)}" for line in text.splitlines())


class WithoutTraceback(logging.Filter):
    """pynetdicom logs a traceback with every malformed PDU a peer sends, quoting the
    peer's bytes: one line says what happened; -vv shows the traceback too."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("pynetdicom"):
            record.exc_info = record.exc_text = None
        return True


_WITHOUT_TRACEBACK = WithoutTraceback()


# --- the store ---------------------------------------------------------------------------


def _resolve_store(ctx: click.Context, param: click.Parameter, store: Path) -> Path:
    """The store's real path, resolved once, here: a symlink to the store is fine, while
    no symlink below it is ever followed. What dicomfs writes there is private to the
    user, or to the store's group too when the store is setgid (see modes.py)."""
    store = store.resolve()
    os.umask(modes.umask_for(store))
    return store


def _use_index(ctx: click.Context, param: click.Parameter, url: str | None) -> None:
    """Every index this command opens is the one --index names (see store.index)."""
    if url:
        os.environ[INDEX_VARIABLE] = url


def _use_name(ctx: click.Context, param: click.Parameter, name: str | None) -> None:
    """This machine's serve is the one --name names (see store/sharing.py)."""
    if name:
        os.environ[sharing.NAME_VARIABLE] = name


def name_option(func: F) -> F:
    return click.option(
        "--name",
        type=ServeName(),
        envvar=sharing.NAME_VARIABLE,
        expose_value=False,
        callback=_use_name,
        help="With the index in PostgreSQL: this serve's name among those sharing the "
        "store (its lock, status socket and spool are its own). Default: this "
        "machine's host name.",
    )(func)


def store_option(func: F) -> F:
    func = click.option(
        "--index",
        type=IndexURL(),
        envvar=INDEX_VARIABLE,
        expose_value=False,
        callback=_use_index,
        help="The index in a PostgreSQL database that several machines share "
        "(postgresql://USER@HOST:PORT/DATABASE). Default: the SQLite file in the store.",
    )(func)
    return click.option(
        "--store",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="DICOMFS_STORE",
        default=config.default_store,
        callback=_resolve_store,
        show_default="$DICOMFS_STORE or ~/.local/share/dicomfs/store",
        help="The store: a directory of DICOM files, with the index inside it (or in "
        "PostgreSQL: --index).",
    )(func)


def create_option(func: F) -> F:
    return click.option(
        "--create",
        is_flag=True,
        help="Start a new store at --store (or $DICOMFS_STORE) if there is none yet.",
    )(func)


def use_store(store: Path, *, create: bool = False) -> Path:
    """The store, absolute. One rule for every command: the default store is made on
    first use; a store named by --store or $DICOMFS_STORE that does not exist is an
    error (a typo must not start an empty store), unless --create asks for it."""
    try:
        if store.exists() and not store.is_dir():
            raise click.ClickException(f"store {store} is not a directory")
    except PermissionError:
        raise click.ClickException(f"cannot reach the store {store}: permission denied") from None
    _not_as_root_in_anothers(store)
    if not store.exists():
        ctx = click.get_current_context()
        source = ctx.get_parameter_source("store")
        if source != ParameterSource.DEFAULT and not create:
            raise click.ClickException(_no_store(store, source, "create" in ctx.params))
        try:
            store.mkdir(parents=True, exist_ok=True)  # another command may make it meanwhile
            if source == ParameterSource.DEFAULT:
                Index(store).close()  # every command can use it at once, finding it empty
        except OSError as exc:
            raise click.ClickException(f"cannot create the store {store}: {exc.strerror}") from exc
    return store.absolute()


def _not_as_root_in_anothers(store: Path) -> None:
    """root must not write into a store another user owns (the service's): what it
    made there would be root's, and that user could no longer read or remove it."""
    if os.geteuid() != 0:
        return
    owners = set()
    for path in (store, store / INDEX_DIR):
        with contextlib.suppress(OSError):
            owners.add(path.stat().st_uid)
    owner = max(owners, default=0)  # another user's, if either is
    if owner != 0:
        from ..life.access import user_name

        name = user_name(owner)
        sudo_name = name if not name.isdigit() else f"'#{name}'"
        raise click.ClickException(
            f"the store {store} belongs to the user {name}: run dicomfs as that user "
            f"(sudo -u {sudo_name} dicomfs ...), so that nothing in it becomes root's"
        )


def _no_store(store: Path, source: ParameterSource | None, can_create: bool) -> str:
    named_by = {
        ParameterSource.ENVIRONMENT: "$DICOMFS_STORE",
        ParameterSource.DEFAULT_MAP: from_config("store"),
    }.get(source, "--store")  # type: ignore[arg-type]
    remedy = (
        "add --create to start a new store there"
        if can_create
        else f"'dicomfs index --create --store {store}' starts a new one"
    )
    return f"store {store} (from {named_by}) does not exist: check the path, or {remedy}"


def mountpoint_option(help_text: str) -> Callable[[F], F]:
    return click.option(
        "--mount",
        "mountpoint",
        metavar="MOUNTPOINT",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="DICOMFS_MOUNT",
        default=config.default_mount,
        show_default="$DICOMFS_MOUNT or ~/dicom",
        help=help_text,
    )


def use_mountpoint(mountpoint: Path) -> Path:
    """The mount point, absolute. The rule of the store: the default (~/dicom, or
    $DICOMFS_MOUNT) is made on first use; one named on the command line must exist,
    so that a typo does not make a directory to mount on."""
    from ..mount import run as mount

    if mount.is_stale(mountpoint) or os.path.isdir(mountpoint):
        return mountpoint.absolute()  # a mount left by a crash is cleared when mounting
    try:
        os.lstat(mountpoint)
    except PermissionError:  # another user's FUSE mount refuses even a stat
        raise click.ClickException(
            f"cannot use {mountpoint}: permission denied (another user's mount, or a "
            "directory you may not enter)"
        ) from None
    except OSError:
        pass
    if os.path.lexists(mountpoint):
        raise click.ClickException(f"mount point {mountpoint} is not a directory")
    source = click.get_current_context().get_parameter_source("mountpoint")
    if source in (ParameterSource.COMMANDLINE, ParameterSource.DEFAULT_MAP):
        named_by = (
            f" (from {from_config('mountpoint')})" if source == ParameterSource.DEFAULT_MAP else ""
        )
        raise click.ClickException(
            f"mount point {mountpoint}{named_by} does not exist: check the path, or make it "
            f"first (mkdir -p {mountpoint})"
        )
    try:
        mountpoint.mkdir(parents=True)
    except OSError as exc:
        raise click.ClickException(
            f"cannot create the mount point {mountpoint}: {exc.strerror}"
        ) from exc
    return mountpoint.absolute()


def aet_option(func: F) -> F:
    return click.option(
        "--aet", type=AETitle(), default=config.AE_TITLE, show_default=True, help="Our AE title."
    )(func)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(func)


@click.group(cls=Commands, context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version")
@click.option("-v", "--verbose", count=True, help=VERBOSE_HELP)
@click.option(
    "--config", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
    is_eager=True, expose_value=False, callback=_use_config, help=CONFIG_HELP,
)  # fmt: skip
@click.pass_context
def main(ctx: click.Context, verbose: int) -> None:
    """dicomfs: receive, index and browse DICOM images as plain files.

    \b
    Typical use:
      dicomfs serve                      receive on port 11112, mount on ~/dicom
      dicomfs find doe 20040609          find a study by name, ID, date, accession, UID
      dicomfs pull --from pacs --patient-id 12345     fetch a patient's studies
      dicomfs expire --dry-run           what goes a week after its last use
      dicomfs keep STUDY-DIRECTORY       ...unless it is kept
      dicomfs index ~/Downloads/scan1    copy a tree of DICOM files in and index it
      dicomfs status                     what the running serve is doing
      dicomfs config                     the settings in use, and where each comes from

    Every command reads the configuration file (--config, $DICOMFS_CONFIG, else
    /etc/dicomfs/dicomfs.toml and ~/.config/dicomfs/dicomfs.toml): its keys are
    the options' defaults, and the command line overrides them.
    """
    os.umask(modes.PRIVATE)  # patients' data: the store's option may widen it to a group
    handler = logging.StreamHandler()
    handler.setFormatter(PrintableFormatter("%(levelname)s %(message)s"))
    logging.basicConfig(handlers=[handler])
    ctx.meta[VERBOSITY] = verbose
    set_verbosity(verbose)


def open_index(store: Path, *, create: bool = False) -> Index:
    """The index of a store (see use_store), made now if `create`; a one-line error
    when there is none to open."""
    try:
        check_own_dirs(store)
        Index.upgrade(store)  # what an older dicomfs made, once: readers never write
        return Index(store, readonly=not create)
    except (IndexUnusable, UnsafeStore) as exc:
        raise click.ClickException(str(exc)) from exc
    except PermissionError as exc:
        raise click.ClickException(
            f"cannot read the store {store}: {exc.strerror} ({exc.filename}); "
            "a store is its owner's and its group's alone"
        ) from exc
    except sqlite3.OperationalError as exc:
        raise click.ClickException(f"cannot open the index of {store}: {exc}") from exc


@main.command("index", context_settings=CONTEXT)
@store_option
@create_option
@json_option
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Parser processes.  [default: one per core]",
)
@click.option(
    "--to",
    "to_url",
    type=IndexURL(),
    default=None,
    help="Copy the store's SQLite index into this PostgreSQL database, which must hold "
    "no index yet (postgresql://USER@HOST:PORT/DATABASE): every table with its row ids "
    "but the journal of changes, in one transaction; then check the copy table by "
    "table. The SQLite file is only read.",
)
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
def index_command(
    store: Path,
    create: bool,
    as_json: bool,
    jobs: int | None,
    to_url: str | None,
    paths: tuple[Path, ...],
) -> None:
    """Bring the index in step with the files, or import files from elsewhere.

    Without PATHS: every file of the store is checked. New and changed files are
    parsed (headers only), rows of vanished files are removed, and unchanged files
    are recognised by size and mtime without being opened.

    With PATHS (files or directories outside the store): DICOM files are copied into
    the store atomically, then indexed. The originals are never modified. Of files
    with the same SOPInstanceUID the newest wins, as in the store; the others are
    reported, not copied.

    With --to: the lab moves to several machines. The store's SQLite index is
    copied into a PostgreSQL database that holds none yet, and the copy checked;
    stop serve and the mounts of the store first. Then every machine names the
    database in its configuration file (index = "postgresql://...").

    \b
    Examples:
      dicomfs index --store /data/dicom
      dicomfs index --create --store /data/new-store ~/old-scans/
      dicomfs index --json
      dicomfs index /media/cdrom/DICOM old-scans/
      dicomfs index --store /data/dicom --to postgresql://dicomfs@db.example.org/dicomfs
    """
    if to_url is not None:
        if paths or create:
            raise UsageError("--to copies the index of an existing store: no PATHS, no --create")
        if not os.path.lexists(store):  # nor is the default store made for it
            raise click.ClickException(f"store {store} does not exist: check --store")
        _copy_index(use_store(store), to_url, as_json)
        return
    store = use_store(store, create=create)
    for path in paths:
        if path.resolve().is_relative_to(store):
            raise click.ClickException(
                f"{path} is inside the store already: run 'dicomfs index' without paths"
            )
    with open_index(store, create=True) as index:
        progress = output.ProgressBar("Indexing" if not paths else "Importing", enabled=not as_json)
        with progress:
            if paths:
                report = import_paths(index, store, paths, progress, jobs)
            else:
                report = reconcile(index, store, progress, jobs)
        if as_json:
            click.echo(output.to_json(report.as_dict()))
        else:
            output.print_index_report(report, store)


def _copy_index(store: Path, url: str, as_json: bool) -> None:
    """index --to: the store's SQLite index into a PostgreSQL database, checked."""
    if binding.in_postgresql(store):
        raise click.ClickException(
            f"the index of {store} is in PostgreSQL already: --to copies a SQLite index"
        )
    serving = running.listening(store)
    if serving is not None:
        raise click.ClickException(
            f"a dicomfs serve (pid {serving.pid}) serves {store}: stop it, and the store's "
            "mounts, before its index moves"
        )
    try:
        check_own_dirs(store)
        with output.ProgressBar("Copying", enabled=not as_json) as progress:
            copied = to_postgres.copy_index(store, url, progress)
    except (IndexUnusable, UnsafeStore, to_postgres.CopyError) as exc:
        raise click.ClickException(str(exc)) from exc
    except sqlite3.Error as exc:
        raise click.ClickException(f"cannot read the index of {store}: {exc}") from exc
    if as_json:
        click.echo(output.to_json(dataclasses.asdict(copied) | {"checked": True}))
        return
    output.print_copy_report(copied, store)


@main.command("find", context_settings=CONTEXT)
@store_option
@json_option
@mountpoint_option("Mount point to prefix the paths in the views with.")
@click.argument("terms", nargs=-1, required=True)
def find_command(store: Path, as_json: bool, mountpoint: Path, terms: tuple[str, ...]) -> None:
    """Find studies by patient name, ID, accession number, description, UID or date.

    Each TERM may be part of a patient name or of a study or series description
    (the beginnings of its words; case and accents do not matter: 'doe^jo' and
    'doe jo' both find DOE^JOHN), the beginning of a patient ID or accession
    number (case does not matter), the beginning of a StudyInstanceUID, or a study
    date as find prints it: 2004-06-09, a month 2004-06, a year 2004, or a range
    2004-06-01..2004-06-30 (either end may be left open). 20040609, 200406 and
    20040601-20040630 work too (put '--' before a range that starts with '-').
    A date that does not exist (2004-13, 2004-02-30) or a range that ends before
    it starts is an error, unless the term matches as an ID or a name.
    A study must match every TERM. Prints one line per study with its paths in
    each view of the mount. Exits with 1 when nothing matches.

    \b
    Examples:
      dicomfs find doe
      dicomfs find 'müller^j' 2004
      dicomfs find knee 2006-12
      dicomfs find 1.2.840.113619.2.5
      dicomfs find --json 12345
      dicomfs find smith ..2004-12-31
    """
    with open_index(use_store(store)) as index:
        try:
            studies = search.matching_studies(index, list(terms))
        except search.NotADate as exc:
            raise click.UsageError(str(exc)) from exc
        rows = catalog.study_rows(index, studies, mountpoint)
    if as_json:
        click.echo(output.to_json(rows))
    else:
        for row in rows:
            click.echo(output.study_line(row))
    if not rows:
        click.echo(output.printable(f"no study matches {' '.join(terms)}"), err=True)
        sys.exit(1)


def mount_options(func: F) -> F:
    for option in reversed(
        [
            click.option(
                "--allow-other",
                is_flag=True,
                help="Let other users in (needs user_allow_other in /etc/fuse.conf).",
            ),
            click.option(
                "--uid",
                type=Account("user"),
                default=None,
                help="Owner of the files: a user name or number.  [default: you]",
            ),
            click.option(
                "--gid",
                type=Account("group"),
                default=None,
                help="Group of the files: a group name or number.  [default: yours]",
            ),
            click.option(
                "--allow-delete",
                is_flag=True,
                help="Let rm, and rm -r of any directory, delete the instances, audited.",
            ),
            click.option(
                "--mode",
                "file_mode",
                type=FileMode(),
                default="0600",
                show_default=True,
                help="Mode of the files, with the owner's w always (for copies; the mount "
                "stays read-only); directories get x where r is set.",
            ),
        ]
    ):
        func = option(func)
    return func


def _mount_options(
    allow_other: bool, uid: int | None, gid: int | None, file_mode: int, allow_delete: bool,
    retention: float | None = None,
) -> Any:  # fmt: skip
    from ..mount.fs import MountOptions

    return MountOptions(
        uid=os.getuid() if uid is None else uid,
        gid=os.getgid() if gid is None else gid,
        file_mode=file_mode,
        allow_other=allow_other,
        allow_delete=allow_delete,
        retention=retention,
    )


@main.command("mount", context_settings=CONTEXT)
@store_option
@click.argument(
    "mountpoint", type=click.Path(file_okay=False, path_type=Path), default=config.default_mount
)
@click.option("--background", is_flag=True, help="Detach once the mount is up.")
@click.option("--detached", is_flag=True, hidden=True)  # the process --background starts
@mount_options
def mount_command(
    store: Path,
    mountpoint: Path,
    background: bool,
    detached: bool,
    allow_other: bool,
    allow_delete: bool,
    uid: int | None,
    gid: int | None,
    file_mode: int,
) -> None:
    """Show the store's instances as files in several views.

    \b
    by-modality/MR0000.MOD/BWOW1.STA/20040609.DAY/<StudyUID>.UID/000001.SER/
    by-patient/<Name>_<ID>/<Date>_<Description>/<Number>_<Description>/
    by-date/2004/06/09/<Name>_<ID>/<Date>_<Description>/<Number>_<Description>/
    by-received/2026-11-25/14.30.12_<Name>_<ID>_<Date>_<Description>/<Series>/
    by-uid/<StudyUID>/<SeriesUID>/<SOPInstanceUID>.dcm
    index.html    every study on one page, for Find in page; made when opened

    Read-only. Runs in the foreground until Ctrl-C (or SIGTERM), then unmounts;
    a mount left behind by a crash is cleared first. With --background, the
    mount process logs to ~/.local/state/dicomfs/mount-<mount point>.log.

    \b
    Examples:
      dicomfs mount ~/dicom
      dicomfs mount --background --allow-other --mode 0440 --gid radiology /spl/dicom
      dicomfs umount ~/dicom
    """
    from ..mount import run as mount

    options = _mount_options(allow_other, uid, gid, file_mode, allow_delete)
    store = use_store(store)
    with open_index(store):
        pass  # a clear error now if there is no index to show
    mountpoint = use_mountpoint(mountpoint)
    try:
        if background:
            args = [
                "mount",
                "--detached",
                "--store",
                str(store.absolute()),
                str(mountpoint),
                "--mode",
                f"{file_mode:04o}",
            ]
            args += ["--allow-other"] if allow_other else []
            args += ["--allow-delete"] if allow_delete else []
            args += ["--uid", str(options.uid), "--gid", str(options.gid)]
            log = mount.background_log(mountpoint)
            pid = mount.start_background(args, mountpoint, log)
            click.echo(output.printable(f"mounted {store} on {mountpoint} (pid {pid}); log: {log}"))
        elif detached:
            _log_as_service()  # into the log file: with times, and what it does
            mount.run(store, mountpoint, options)
        else:
            _mount_in_foreground(store, mountpoint, options)
    except mount.MountError as exc:
        raise click.ClickException(str(exc)) from exc


def _mount_in_foreground(store: Path, mountpoint: Path, options: Any) -> None:
    """Mount until Ctrl-C, saying when the mount is up and when it is gone."""
    from ..mount import run as mount

    mounted = False

    def say_mounted() -> None:
        nonlocal mounted
        mounted = True
        click.echo(output.printable(f"mounted {store} on {mountpoint}; Ctrl-C unmounts"), err=True)

    try:
        mount.run(store, mountpoint, options, on_mounted=say_mounted)
    finally:
        if mounted:
            click.echo(output.printable(f"unmounted {mountpoint}"), err=True)


@main.command("umount", context_settings=CONTEXT)
@click.argument(
    "mountpoint", type=click.Path(file_okay=False, path_type=Path), default=config.default_mount
)
def umount_command(mountpoint: Path) -> None:
    """Unmount a dicomfs mount (also one left behind by a crash).

    Returns once the process that served it (dicomfs mount, or dicomfs serve,
    which stops whole) has exited.

    \b
    Example:
      dicomfs umount ~/dicom
    """
    from ..mount import run as mount

    try:
        mount.umount(mountpoint)
    except mount.MountError as exc:
        raise click.ClickException(str(exc)) from exc


retention_option = click.option(
    "--retention",
    type=Duration(),
    default="7d",
    show_default=True,
    help="How long a series stays after it was last received or read: 7d, 36h, 90m, 30s.",
)


def _local_user() -> str:
    from ..life.access import user_name

    return user_name(os.getuid())


@main.command("serve", context_settings=CONTEXT)
@store_option
@name_option
@create_option
@mountpoint_option("Where to mount the views.")
@click.option("--no-mount", is_flag=True, help="Receive only; do not mount.")
@click.option("--port", type=click.IntRange(1, 65535), default=config.PORT, show_default=True,
              help="Port to listen on (below 1024 needs root).")  # fmt: skip
@aet_option
@click.option(
    "--bind", type=IPAddress(), default=config.BIND, show_default=True, help="Address to listen on."
)
@click.option(
    "--allow-aet",
    type=AETitle(),
    multiple=True,
    metavar="AET",
    help="Accept only these calling AE titles (repeat the option).  [default: any]",
)
@click.option(
    "--allow-address",
    type=Network(),
    multiple=True,
    metavar="ADDR[/BITS]",
    help="Accept only these addresses or networks (repeatable).  [default: any]",
)
@click.option("--require-user", is_flag=True, help="Refuse senders without a DICOM username.")
@click.option(
    "--max-associations",
    type=click.IntRange(min=1),
    default=config.MAX_ASSOCIATIONS,
    show_default=True,
    help="Associations served at once; more are refused (transient).",
)
@click.option(
    "--processes",
    type=click.IntRange(min=1, max=32),
    default=config.RECEIVER_PROCESSES,
    show_default="one per core, at most 4",
    help="Receiver processes: associations at once use that many cores. Each takes its "
    "share of the connections; --max-associations counts them all together; one that "
    "dies stops serve, as a crash would. 1 receives in serve's own process.",
)
@click.option(
    "--request-timeout",
    default=seconds(config.ASSOCIATION_REQUEST_TIMEOUT),
    show_default=True,
    type=Duration(),
    help="Close a connection that has not sent a complete association request by then.",
)
@click.option(
    "--idle-timeout",
    default=seconds(config.IDLE_TIMEOUT),
    show_default=True,
    type=Duration(),
    help="Abort an association that sends nothing for this long.",
)
@click.option(
    "--pdu-timeout",
    default=seconds(config.PDU_TIMEOUT),
    show_default=True,
    type=Duration(),
    help="Close a connection that takes longer than this to send one PDU.",
)
@click.option(
    "--tls-cert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Certificate (PEM) for DICOM over TLS; needs --tls-key.",
)
@click.option(
    "--tls-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Private key (PEM) of --tls-cert.",
)
@retention_option
@click.option(
    "--sweep-interval",
    type=Duration(),
    default="5m",
    show_default=True,
    help="How often to expire what is due and reconcile the index with the files.",
)
@click.option(
    "--warn-free",
    type=DiskFloor(),
    default="5%",
    show_default=True,
    help="Warn in the log and in dicomfs status when the store's disk has less free: "
    "a share (5%) or an amount (20G).",
)
@mount_options
def serve_command(
    store: Path,
    create: bool,
    mountpoint: Path,
    no_mount: bool,
    port: int,
    aet: str,
    bind: str,
    allow_aet: tuple[str, ...],
    allow_address: tuple[str, ...],
    require_user: bool,
    max_associations: int,
    processes: int,
    request_timeout: float,
    idle_timeout: float,
    pdu_timeout: float,
    tls_cert: Path | None,
    tls_key: Path | None,
    retention: float,
    sweep_interval: float,
    warn_free: diskspace.Floor,
    allow_other: bool,
    allow_delete: bool,
    uid: int | None,
    gid: int | None,
    file_mode: int,
) -> None:
    """Receive DICOM from scanners and PACS, answer workstations' queries and
    retrievals, and mount the views, in one service.

    Answers C-ECHO and C-STORE of every storage SOP class. Each instance is
    written, fsynced, renamed into the store and indexed before the sender
    hears Success; who sent it (calling AE title, address, called AE title,
    DICOM username) is recorded with it and in the audit trail.

    On the same port and AE title it answers C-FIND, C-GET and C-MOVE (Patient
    and Study Root) from the index, for 3D Slicer, Weasis or a PACS; a C-MOVE
    goes only to a peer named with dicomfs remote add ... --move-destination.
    The --allow-* and --require-user options decide who may ask, too.

    At start, files half-received before a crash are removed and the index is
    brought in step with the store. Every --sweep-interval, series untouched for
    --retention are deleted (see dicomfs expire) and the index is reconciled
    again. Runs until Ctrl-C or SIGTERM. A store named by --store or $DICOMFS_STORE
    must exist, or be started with --create. Each option's default may come from
    the configuration file (dicomfs config shows them); `dicomfs status` asks the
    running serve what it is doing.

    \b
    Examples:
      dicomfs serve                                   port 11112, AE title DICOMFS
      dicomfs serve --port 104 --aet SPLDICOM --mount /spl/dicom --allow-other --mode 0440
      dicomfs serve --allow-aet BAY3T --allow-aet PACS --allow-address 10.1.0.0/16
    """
    from ..mount import run as mount
    from ..net.receiver import Policy
    from ..net.wire import Timeouts
    from ..service import ExpiryOptions, ReceiverOptions, ServiceError, run

    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together: give both, or neither")
    _log_as_service()
    policy = Policy(allow_aet, allow_address, require_user)
    timeouts = Timeouts(request_timeout, pdu_timeout, idle_timeout)
    receiving = ReceiverOptions(
        bind, port, aet, policy, max_associations, tls_cert, tls_key, timeouts, processes
    )
    options = _mount_options(allow_other, uid, gid, file_mode, allow_delete, retention)
    store = _ensure_store(store, create)
    try:
        if not no_mount:
            mountpoint = use_mountpoint(mountpoint)
            mount.prepare(mountpoint)  # its errors now, before the receiver starts
        run(
            store,
            receiving,
            ExpiryOptions(retention, sweep_interval),
            None if no_mount else mountpoint,
            options,
            warn_free,
            configured_by=settings().files,
        )
    except (ServiceError, mount.MountError) as exc:
        raise click.ClickException(str(exc)) from exc


def _ensure_store(store: Path, create: bool) -> Path:
    """The store (see use_store) with an index: receiving and pulling may be the first
    use of a store."""
    store = use_store(store, create=create)
    with open_index(store, create=True):
        pass
    return store


def _log_as_service() -> None:
    """A service says what it does: INFO with times unless -v asked for more."""
    root = logging.getLogger()
    for handler in root.handlers:
        handler.setFormatter(PrintableFormatter("%(asctime)s %(levelname)s %(message)s"))
    if root.level > logging.INFO:
        root.setLevel(logging.INFO)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


@main.command("status", context_settings=CONTEXT)
@store_option
@name_option
@json_option
def status_command(store: Path, as_json: bool) -> None:
    """What the running dicomfs serve of the store is doing.

    Asks it over a local socket in the store (never the network): up since when,
    the associations open, what each calling AE title sent today, the store's size
    and the disk's free space, what expires within 24 hours, the last warnings and
    errors, and the mount's state. Exits with 3 when no serve runs for the store.

    \b
    Examples:
      dicomfs status
      dicomfs status --json
    """
    from .. import control
    from . import statusview

    try:
        if not (store / INDEX_DIR).is_dir():
            raise click.ClickException(f"{store} is not a dicomfs store: check the path")
    except PermissionError:
        raise click.ClickException(f"cannot reach the store {store}: permission denied") from None
    try:
        report = control.ask(store)
    except PermissionError:
        raise click.ClickException(
            f"the serve of {store} may be asked only by the store's user (or its group, for "
            "a shared store): run it as that user, or with sudo"
        ) from None
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"the serve of {store} did not answer: {exc}") from exc
    if report is None:
        if as_json:
            click.echo(output.to_json({"running": False, "store": str(store)}))
        click.echo(output.printable(f"no dicomfs serve is running for the store {store}"),
                   err=True)  # fmt: skip
        sys.exit(3)
    if as_json:
        click.echo(output.to_json(report))
        return
    for line in statusview.lines(report):
        click.echo(line)


@main.command("config", context_settings=CONTEXT)
@json_option
@click.pass_context
def config_command(ctx: click.Context, as_json: bool) -> None:
    """The settings every command uses, and where each comes from.

    A setting comes from the command line, else from its environment variable
    ($DICOMFS_STORE, $DICOMFS_MOUNT), else from the configuration file, else from
    the option's default. The configuration file is the one --config or
    $DICOMFS_CONFIG names, else /etc/dicomfs/dicomfs.toml and then
    ~/.config/dicomfs/dicomfs.toml. The output is itself a configuration file.

    \b
    Examples:
      dicomfs config
      dicomfs --config /etc/dicomfs/dicomfs.toml config --json
    """
    group = ctx.find_root().command
    assert isinstance(group, click.Group)
    loaded = settings()
    rows = configfile.effective(group, loaded)
    if as_json:
        click.echo(output.to_json({
            "files": [str(path) for path in loaded.files],
            "settings": {row.key.name: {"value": row.value, "from": row.origin} for row in rows},
            "remotes": {name: {"address": str(peer), "move_destination": peer.move_destination,
                               "from": origin} for name, (peer, origin) in loaded.remotes.items()},
        }))  # fmt: skip
        return
    read = ", ".join(map(str, loaded.files)) or "none (every setting is its default)"
    lines = [f"# configuration files read: {read}"]
    table = ""
    for row in rows:
        if row.key.table != table:
            table = row.key.table
            lines += ["", f"[{table}]"]
        name = row.key.name.rpartition(".")[2]
        if row.value is None:
            lines.append(f"# {name} = (not set: {row.key.about})")
            continue
        missing = row.key.name in ("store", "mount.path") and not os.path.isdir(row.value)
        lines.append(f"{name} = {configfile.toml_value(row.value)}  # {row.origin}"
                     + ("  (does not exist)" if missing else ""))  # fmt: skip
    for name, (peer, origin) in sorted(loaded.remotes.items()):
        lines += ["", f"[remotes.{name}]  # {origin}"]
        lines.append(f"address = {configfile.toml_value(str(peer))}")
        lines.append(f"move_destination = {configfile.toml_value(peer.move_destination)}")
    for line in lines:
        click.echo(output.printable(line))


@main.command("audit", context_settings=CONTEXT)
@store_option
@json_option
@click.option("--patient-id", default=None, help="Only this PatientID.")
@click.option(
    "--since",
    type=Moment(timeparse.moment),
    default=None,
    metavar="WHEN",
    help="From this time on: 2026-11-25, 2026-11-25T14:30, 14:30 (today), or 7d / 36h ago.",
)
@click.option(
    "--event",
    type=click.Choice(
        ["received", "rejected", "read", "deleted", "pulled", "queried", "retrieved"]
    ),
    default=None,
    help="Only this kind of record.",
)
def audit_command(
    store: Path, as_json: bool, patient_id: str | None, since: float | None, event: str | None
) -> None:
    """Show the audit trail: who sent, read, pulled or deleted what, from where, when.

    \b
    Examples:
      dicomfs audit --patient-id 12345
      dicomfs audit --since 7d --event rejected
    """
    from ..store.index import audit

    with open_index(use_store(store)) as index:
        records = audit.search(index.conn, patient_id=patient_id, since=since, event=event)
    if as_json:
        click.echo(output.to_json([{**r, "at": output.iso(r["at"])} for r in records]))
        return
    for record in records:
        click.echo(output.audit_line(record))
    if not records:
        click.echo("no audit records match", err=True)


@main.command("expire", context_settings=CONTEXT)
@store_option
@json_option
@retention_option
@click.option("--dry-run", is_flag=True, help="Only list what would be deleted.")
@click.option("--yes", is_flag=True, help="Delete even with a --retention under one day.")
@click.option(
    "--now",
    type=Moment(timeparse.moment_ahead),
    default=None,
    metavar="TIME",
    help="Evaluate the rule at another time: 2026-11-27T18:00, or 3d / 12h from now. "
    "Later than now needs --dry-run.",
)
def expire_command(
    store: Path, as_json: bool, retention: float, dry_run: bool, yes: bool, now: float | None
) -> None:
    """Delete the series nobody has received or read for the retention period.

    A series goes whole: its files, its rows, and the directories it leaves empty
    in every view. Kept studies and series (dicomfs keep) stay. Each deletion is
    in the audit trail. `dicomfs serve` does this by itself every few minutes.

    \b
    Examples:
      dicomfs expire --dry-run                          what goes now, with sizes
      dicomfs expire --dry-run --now 2026-11-27T18:00   what goes by Friday evening?
      dicomfs expire --dry-run --now 3d                 what goes in the next three days?
      dicomfs expire --retention 14d
      dicomfs expire --retention 12h --yes              by hand, under a day needs --yes
    """
    import time

    from ..life import expiry
    from ..store.writer import IndexWriter

    if retention < DAY and not dry_run and not yes:
        raise click.UsageError(
            "a --retention under one day deletes series read or received today: "
            "add --yes if that is meant, or --dry-run to see what would go"
        )
    if now is None:
        now = time.time()
    elif now > time.time() + 1 and not dry_run:
        raise click.UsageError("--now later than now would delete what is not due yet: "
                               "add --dry-run")  # fmt: skip
    store = use_store(store)
    if dry_run:
        with open_index(store) as index:
            due = expiry.due(index.conn, now, retention)
    else:
        with open_index(store):
            pass  # a clear error now if there is no index
        writer = IndexWriter(store)
        try:
            due = expiry.expire(writer, store, now, retention, by=_local_user())
        finally:
            writer.close()
    due = output.in_patient_order(due)
    if as_json:
        click.echo(output.to_json([output.due_record(series) for series in due]))
        return
    for series in due:
        click.echo(output.expiry_line(series))
    total = sum(series.bytes for series in due)
    verb = "would delete" if dry_run else "deleted"
    click.echo(f"{verb} {len(due)} series, {output.size(total)}", err=True)


@main.command("keep", context_settings=CONTEXT)
@store_option
@mountpoint_option("The mount that PATH is in.")
@click.option(
    "--until",
    type=Moment(timeparse.future_moment),
    default=None,
    metavar="WHEN",
    help="Keep until then: 2027-06-30 (to the end of that day), 2027-06-30T18:00, "
    "18:00 (today), or 30d / 36h from now.",
)
@click.option("--list", "list_kept", is_flag=True, help="List what is kept, and keeps that lapsed.")
@click.option("--drop", is_flag=True, help="Stop keeping it: it expires as usual again.")
@click.argument("target", required=False, metavar="PATH-or-UID")
def keep_command(
    store: Path,
    mountpoint: Path,
    until: float | None,
    list_kept: bool,
    drop: bool,
    target: str | None,
) -> None:
    """Keep a study or series from expiry (research scans that must not be lost).

    PATH is a study or series directory in any view of the mount; UID a
    StudyInstanceUID or SeriesInstanceUID. index.html marks kept studies KEPT.
    Keeping again replaces the keep (and says what it replaced). --list shows
    keeps that lapsed too, until they are dropped.

    \b
    Examples:
      dicomfs keep ~/dicom/by-patient/DOE_JOHN_12345/20040609_Brain
      dicomfs keep 1.2.840.113619.2.5.1762874864.1706.1086778760.584 --until 2027-06-30
      dicomfs keep 1.2.840.113619.2.5.1762874864.1706.1086778760.584 --until 30d
      dicomfs keep --list
      dicomfs keep --drop 1.2.840.113619.2.5.1762874864.1706.1086778760.584
    """

    from ..life import expiry
    from ..store.writer import IndexWriter

    if list_kept:
        _list_keeps(store, drop, until, target)
        return
    if target is None:
        raise click.UsageError("name a study or series (PATH or UID), or use --list")
    store = use_store(store)
    with open_index(store) as index:
        try:
            uid, level = expiry.resolve(index.conn, target, mountpoint)
            what = f"{level} {uid}"
        except expiry.NotFound as exc:
            if not (drop and expiry.is_kept(index.conn, target)):
                raise click.ClickException(str(exc)) from exc
            uid, level = target, ""  # gone from the store: its (lapsed) keep can still go
            what = f"{uid} (no longer in the store)"
    writer = IndexWriter(store)
    try:
        if drop:
            if not writer.run(lambda index: expiry.unkeep(index, uid)):
                raise click.ClickException(f"{what} was not kept")
            expires = ": it expires as usual" if level else ""
            click.echo(output.printable(f"{what} is no longer kept{expires}"))
            return
        before = writer.run(lambda index: expiry.keep(index, uid, level, until, _local_user()))
    finally:
        writer.close()
    when = f"until {output.iso(until)}" if until else "until dropped (dicomfs keep --drop)"
    replaced = f", replacing {output.keep_span(before)}" if before else ""
    click.echo(output.printable(f"kept {what} {when}{replaced}"))


def _list_keeps(store: Path, drop: bool, until: float | None, target: str | None) -> None:
    import time

    from ..life import expiry

    extra = [what for what, given in (("--drop", drop), ("--until", until is not None),
                                      (target, target is not None)) if given]  # fmt: skip
    if extra:
        raise click.UsageError(f"--list goes alone: leave out {' and '.join(map(str, extra))}")
    with open_index(use_store(store)) as index:
        keeps = expiry.kept(index.conn, time.time())
    for item in keeps:
        click.echo(output.kept_line(item))
    if not keeps:
        click.echo("nothing is kept", err=True)


@main.command("check", context_settings=CONTEXT)
@store_option
@click.option("--repair", is_flag=True, help="Bring the index in step with the files.")
def check_command(store: Path, repair: bool) -> None:
    """Report every disagreement between the index and the files; --repair fixes them.

    Rows whose file is gone, files without a row, files whose size or time
    changed since they were indexed, and deletions a crash interrupted. Exits
    with 1 when it finds any and does not repair them.

    \b
    Examples:
      dicomfs check
      dicomfs check --repair
    """
    from ..store.indexer import check

    store = use_store(store)
    with open_index(store) as index:
        found = check(index, store)
    for label, paths in (
        ("row without its file", found.missing),
        ("file without a row", found.unindexed),
        ("changed since it was indexed", found.changed),
        ("deleted from the index, still on disk", found.doomed),
    ):
        for path in paths:
            click.echo(output.printable(f"{label}: {path}"))
    if not found:
        click.echo("the index and the files agree", err=True)
        return
    if not repair:
        disagreements = output.count(len(found), "disagreement")
        click.echo(f"{disagreements}; dicomfs check --repair fixes them", err=True)
        sys.exit(1)
    with open_index(store, create=True) as index:
        report = reconcile(index, store)
    output.print_index_report(report, store)


@main.group("remote", context_settings=CONTEXT)
def remote_group() -> None:
    """Named DICOM peers: scanners and PACS to pull from, and the workstations and PACS
    that `serve` sends to when they ask for a C-MOVE (--move-destination).

    \b
    Examples:
      dicomfs remote add bay3t BAY3T@10.1.2.3:104
      dicomfs remote add slicer SLICER@10.1.2.40:11112 --move-destination
      dicomfs remote list
      dicomfs remote remove bay3t
    """


def _peer_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return remotes.check_name(value)
    except remotes.BadRemote as exc:
        raise click.BadParameter(str(exc), ctx, param) from exc


def _peer_address(ctx: click.Context, param: click.Parameter, value: str) -> remotes.Remote:
    try:
        return remotes.parse_address(value)
    except remotes.BadRemote as exc:
        raise click.BadParameter(str(exc), ctx, param) from exc


def _known_peers(store: Path, *, configured: bool = True) -> dict[str, remotes.Remote]:
    """The store's peers, with the configuration file's unless configured is False."""
    try:
        return remotes.known(store) if configured else remotes.load(store)
    except remotes.BadRemote as exc:
        raise click.ClickException(str(exc)) from exc


def _set_in_file(name: str) -> None:
    """Refuse to change a peer that the configuration file names."""
    if remotes.configured(name):
        origin = settings().remotes[name][1]
        raise click.ClickException(f"{name} is set in the configuration file ({origin}): "
                                   "change it there")  # fmt: skip


@remote_group.command("add", context_settings=CONTEXT)
@store_option
@click.argument("name", callback=_peer_name)
@click.argument("address", metavar="AET@HOST:PORT", callback=_peer_address)
@click.option(
    "--move-destination",
    is_flag=True,
    help="A workstation or PACS that may ask `serve` for a C-MOVE to its AE title: the "
    "instances go to HOST:PORT. C-MOVE to any AE title not named so is refused.",
)
def remote_add(store: Path, name: str, address: remotes.Remote, move_destination: bool) -> None:
    """Add (or replace) the peer NAME at AET@HOST:PORT ([...] around an IPv6 address).

    \b
    Examples:
      dicomfs remote add bay3t BAY3T@10.1.2.3:104
      dicomfs remote add pacs PACS@[fd00::4]:104
      dicomfs remote add slicer SLICER@10.1.2.40:11112 --move-destination
    """
    remote = dataclasses.replace(address, name=name, move_destination=move_destination)
    store = use_store(store)
    _set_in_file(name)
    known = _known_peers(store, configured=False)
    same_aet = [other for other in _known_peers(store).values() if other.name != name and
                other.move_destination and other.aet == remote.aet]  # fmt: skip
    if move_destination and same_aet:
        raise click.ClickException(
            f"{same_aet[0].name} is the move destination {remote.aet!r} already: a C-MOVE "
            f"names only an AE title, so one peer has it (dicomfs remote remove "
            f"{same_aet[0].name} first)"
        )
    before = known.get(name)
    known[name] = remote
    remotes.save(store, known)
    if before is None:
        said = f"added {name}: {_described(remote)}"
    elif before == remote:
        said = f"{name} is {_described(remote)} already: unchanged"
    else:
        said = f"replaced {name}: was {_described(before)}, now {_described(remote)}"
    click.echo(output.printable(said))


def _described(remote: remotes.Remote) -> str:
    return f"{remote}, a move destination" if remote.move_destination else str(remote)


@remote_group.command("list", context_settings=CONTEXT)
@store_option
def remote_list(store: Path) -> None:
    """List the peers, by name.

    \b
    Example:
      dicomfs remote list
    """
    known = _known_peers(use_store(store))
    for name, remote in sorted(known.items()):
        origin = f"  (set in {settings().remotes[name][1]})" if remotes.configured(name) else ""
        click.echo(output.printable(f"{name}  {_described(remote)}{origin}"))
    if not known:
        click.echo("no peers yet (dicomfs remote add NAME AET@HOST:PORT)", err=True)


@remote_group.command("remove", context_settings=CONTEXT)
@store_option
@click.argument("name")
def remote_remove(store: Path, name: str) -> None:
    """Forget the peer NAME.

    \b
    Example:
      dicomfs remote remove bay3t
    """
    store = use_store(store)
    _set_in_file(name)
    known = _known_peers(store, configured=False)
    if known.pop(name, None) is None:
        raise click.ClickException(f"no peer called {name!r}")
    remotes.save(store, known)


@main.command("pull", context_settings=CONTEXT)
@store_option
@create_option
@click.option(
    "--from", "peer", required=True, metavar="PEER", help="A peer's name, or AET@HOST:PORT."
)
@click.option("--study", "study_uid", default=None, metavar="UID", help="A StudyInstanceUID.")
@click.option("--patient-id", default=None, metavar="ID", help="Every study of this PatientID.")
@click.option("--accession", default=None, metavar="N", help="The study of this AccessionNumber.")
@click.option("--series", "series_uid", default=None, metavar="UID", help="A SeriesInstanceUID.")
@click.option(
    "--method",
    type=click.Choice(["move", "get"]),
    default="move",
    show_default=True,
    help="C-MOVE to our receiver (the peer must know our AE title), or C-GET.",
)
@click.option("--follow", is_flag=True, help="Keep fetching what appears, until Ctrl-C or idle.")
@click.option("--interval", type=click.FloatRange(min=0, min_open=True), default=2.0,
              show_default=True, help="Seconds between looks.")  # fmt: skip
@click.option("--until-idle", type=click.FloatRange(min=0), default=None, metavar="S",
              help="With --follow: stop when nothing new arrived for S seconds.")  # fmt: skip
@aet_option
@click.option("--port", type=click.IntRange(1, 65535), default=config.PORT, show_default=True,
              help="Our receiver's port, for C-MOVE.")  # fmt: skip
@click.option("--bind", type=IPAddress(), default=config.BIND, show_default=True,
              help="Address for a receiver of our own, when no dicomfs serve runs.")  # fmt: skip
def pull_command(
    store: Path,
    create: bool,
    peer: str,
    study_uid: str | None,
    patient_id: str | None,
    accession: str | None,
    series_uid: str | None,
    method: str,
    follow: bool,
    interval: float,
    until_idle: float | None,
    aet: str,
    port: int,
    bind: str,
) -> None:
    """Fetch a study (or a patient's studies, or a series) from a scanner or PACS.

    Asks the peer what it has (C-FIND), skips what the store already has, and
    fetches the rest: by C-MOVE to our receiver (a running `dicomfs serve`, or one
    started here on --port) or by C-GET. With --follow it looks again every
    --interval seconds, so images arrive while the exam goes on. Several pulls at
    once are safe; running one again fetches only what is missing. Exits with 1
    when something could not be fetched, naming it.

    \b
    Examples:
      dicomfs pull --from pacs --patient-id 12345
      dicomfs pull --from bay3t --study 1.2.840.113619.2.5.1762874864 --follow --until-idle 120
      dicomfs pull --from PACS@10.1.2.4:104 --accession A100 --method get
    """
    from ..net import puller

    asked = [v for v in (study_uid, patient_id, accession, series_uid) if v]
    if len(asked) != 1:
        raise click.UsageError(
            "say what to pull: one of --study, --patient-id, --accession, --series"
        )
    if until_idle is not None and not follow:
        raise click.UsageError("--until-idle goes with --follow")
    store = _ensure_store(store, create)
    try:
        remote = remotes.find(store, peer)
    except remotes.BadRemote as exc:
        raise click.ClickException(str(exc)) from exc
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)  # we say what went wrong
    query = puller.PullQuery(study_uid, patient_id, accession, series_uid)
    options = puller.PullOptions(method, aet, port, bind, follow, interval, until_idle)
    show = output.PullProgressLine(remote.name)
    try:
        progress, missing = puller.pull(store, remote, query, options, _local_user(), show)
    except puller.PullError as exc:
        show.done()
        raise click.ClickException(str(exc)) from exc
    show.done()
    click.echo(
        output.printable(
            f"pulled {output.count(progress.fetched, 'instance')} from {remote.name} "
            f"({progress.found} there, {progress.had} were here already)"
        )
    )
    if missing:
        for instance in missing[:20]:
            line = f"  not fetched: {instance.sop_uid} (series {instance.series_uid})"
            click.echo(output.printable(line), err=True)
        raise click.ClickException(f"{output.count(len(missing), 'instance')} could not be fetched")
    if progress.found == 0:
        raise click.ClickException(f"{remote.name} has nothing that matches")
