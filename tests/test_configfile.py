"""The configuration file: where it is looked up, what it sets, what overrides it, and
the one-line errors of a bad one."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest
from click.core import ParameterSource

from dicomfs.cli import configfile
from dicomfs.cli.main import main
from dicomfs.dicom import corpus
from tests.test_cli import dicomfs

REPOSITORY = Path(__file__).parent.parent
EXAMPLE = REPOSITORY / "contrib" / "dicomfs.toml"


def serve_context(*args: str) -> click.Context:
    """serve's options as its command line and the configuration would set them,
    without serving."""
    root = main.make_context("dicomfs", ["serve", "--help"], resilient_parsing=True)
    return main.commands["serve"].make_context("serve", list(args), parent=root)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_the_file_sets_the_defaults_and_the_command_line_overrides_them(tmp_path: Path) -> None:
    config = write(tmp_path / "d.toml", '[receiver]\nport = 104\naet = "SPLDICOM"\n'
                   '[expiry]\nretention = "14d"\n')  # fmt: skip
    ctx = serve_context("--config", str(config), "--aet", "OTHER")
    assert ctx.params["port"] == 104
    assert ctx.get_parameter_source("port") == ParameterSource.DEFAULT_MAP
    assert ctx.params["retention"] == 14 * 86400
    assert ctx.params["aet"] == "OTHER"
    assert ctx.params["max_associations"] == 16  # not in the file: the option's default


def test_an_environment_variable_overrides_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(tmp_path / "d.toml", f'store = "{tmp_path / "from-file"}"\n')
    monkeypatch.setenv("DICOMFS_STORE", str(tmp_path / "from-env"))
    ctx = serve_context("--config", str(config))
    assert ctx.params["store"] == (tmp_path / "from-env").resolve()


def test_lookup_order_named_file_then_environment_then_system_and_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = write(tmp_path / "system.toml", '[receiver]\nport = 104\naet = "SYSTEM"\n')
    user_home = tmp_path / "xdg"
    (user_home / "dicomfs").mkdir(parents=True)
    write(user_home / "dicomfs" / "dicomfs.toml", '[receiver]\naet = "USER"\n')
    monkeypatch.setattr(configfile, "SYSTEM_FILE", system)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(user_home))
    monkeypatch.delenv("DICOMFS_CONFIG")
    ctx = serve_context()
    assert (ctx.params["port"], ctx.params["aet"]) == (104, "USER")  # the user's wins, by key

    named = write(tmp_path / "named.toml", '[receiver]\naet = "NAMED"\n')
    monkeypatch.setenv("DICOMFS_CONFIG", str(named))
    ctx = serve_context()
    assert (ctx.params["port"], ctx.params["aet"]) == (11112, "NAMED")  # that file alone

    flag = write(tmp_path / "flag.toml", '[receiver]\naet = "FLAG"\n')
    assert serve_context("--config", str(flag)).params["aet"] == "FLAG"


def test_config_before_the_command_applies_to_it(tmp_path: Path) -> None:
    config = write(tmp_path / "d.toml", '[receiver]\naet = "BEFORE"\n')
    shown = json.loads(dicomfs("--config", str(config), "config", "--json").stdout)
    assert shown["settings"]["receiver.aet"] == {"value": "BEFORE", "from": f"{config}:2"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[receiver]\nprot = 104\n", ":2: unknown key 'receiver.prot': did you mean"),
        ("[receiver]\n\nport = 70000\n", ":3: receiver.port: 70000 is not in the range"),
        ('[receiver]\nport = "104"\n', ":2: receiver.port: give a whole number"),
        ('[receiver]\naet = "A\\\\B"\n', ":2: receiver.aet: "),
        ('store = "relative/store"\n', ":1: store: 'relative/store' is not an absolute path"),
        ('[expiry]\nretention = "a week"\n', ":2: expiry.retention: "),
        ('[disk]\nwarn_free = "120%"\n', ":2: disk.warn_free: '120%' is the whole disk"),
        ('[mount]\nallow_other = "yes"\n', ":2: mount.allow_other: give true or false"),
        ('[receiver]\nallow_address = ["10.1.0.0/33"]\n', ":2: receiver.allow_address: '10.1"),
        ('[mount]\nmode = 440\n', ':2: mount.mode: give it in quotes, such as "0440"'),
        ('[receiver]\ntls_cert = "/c.pem"\n', ":2: receiver.tls_cert and receiver.tls_key go"),
        ("port = 104\n", ":1: unknown key 'port': did you mean 'receiver.port'?"),
        ("[receiver]\nport = \n", ":2: not valid TOML"),
        ('[remotes.pacs]\naddress = "PACS@host"\n', ":2: remotes.pacs: 'PACS@host' is not"),
        ('[remotes.pacs]\nadress = "P@h:1"\n', ":2: unknown key 'remotes.pacs.adress'"),
    ],
)  # fmt: skip
def test_a_bad_file_is_one_line_naming_the_file_and_line(
    tmp_path: Path, text: str, message: str
) -> None:
    config = write(tmp_path / "bad.toml", text)
    result = dicomfs("--config", str(config), "find", "doe", check=False)
    assert result.returncode == 2
    assert result.stderr.startswith(f"Error: {config}{message}"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_a_named_file_must_exist(tmp_path: Path) -> None:
    result = dicomfs("find", "doe", check=False, env={"DICOMFS_CONFIG": str(tmp_path / "no.toml")})
    assert result.returncode == 2
    assert "configuration file" in result.stderr
    assert "(from $DICOMFS_CONFIG) does not exist" in result.stderr


def test_config_says_where_each_setting_comes_from(tmp_path: Path) -> None:
    config = write(tmp_path / "d.toml", '# the lab\n[mount]\nmode = "0440"\n')
    shown = dicomfs("--config", str(config), "config", env={"DICOMFS_MOUNT": "/spl/dicom"}).stdout
    assert f'mode = "0440"  # {config}:3' in shown
    assert 'path = "/spl/dicom"  # $DICOMFS_MOUNT' in shown
    assert "port = 11112  # default" in shown
    # What it prints is itself a configuration file that gives the same settings.
    again = write(tmp_path / "again.toml", shown)
    shown_again = json.loads(dicomfs("--config", str(again), "config", "--json").stdout)
    assert shown_again["settings"]["mount.mode"]["value"] == "0440"
    assert shown_again["settings"]["receiver.port"]["value"] == 11112


def test_the_example_file_has_every_key_with_its_default() -> None:
    text = EXAMPLE.read_text()
    for key in configfile.KEYS:
        name = key.name.rpartition(".")[2]
        assert re.search(rf"^(# )?{name} = ", text, re.MULTILINE), f"{key.name} is missing"
    shown = json.loads(dicomfs("--config", str(EXAMPLE), "config", "--json").stdout)
    defaults = json.loads(dicomfs("config", "--json").stdout)["settings"]  # an empty file
    for name, setting in shown["settings"].items():
        if name not in ("store", "mount.path", "receiver.allow_address"):  # the service's
            assert setting["value"] == defaults[name]["value"], name


def test_the_readme_shows_the_example_file() -> None:
    readme = (REPOSITORY / "README.md").read_text()
    assert f"```toml\n{EXAMPLE.read_text()}```" in readme


def test_find_prints_paths_under_the_mount_the_file_names(tmp_path: Path) -> None:
    store = tmp_path / "store"
    corpus.write(tmp_path / "in" / "doe.dcm", corpus.Spec(patient_name="DOE^JANE"))
    dicomfs("index", "--create", "--store", str(store), str(tmp_path / "in"))
    config = write(tmp_path / "d.toml", f'store = "{store}"\n[mount]\npath = "/spl/dicom"\n')
    found = dicomfs("--config", str(config), "find", "doe").stdout
    assert "/spl/dicom/by-patient/" in found


def test_a_remote_in_the_file_is_known_and_kept_out_of_the_store(tmp_path: Path) -> None:
    store = tmp_path / "store"
    dicomfs("index", "--create", "--store", str(store))
    config = write(tmp_path / "d.toml", f'store = "{store}"\n\n[remotes.pacs]\n'
                   'address = "PACS@127.0.0.1:4242"\nmove_destination = true\n')  # fmt: skip
    listed = dicomfs("--config", str(config), "remote", "list").stdout
    assert f"pacs  PACS@127.0.0.1:4242, a move destination  (set in {config}:3)" in listed
    removed = dicomfs("--config", str(config), "remote", "remove", "pacs", check=False)
    assert removed.returncode == 1
    assert "change it there" in removed.stderr
    dicomfs("--config", str(config), "remote", "add", "bay3t", "BAY3T@127.0.0.1:104")
    kept = json.loads((store / ".dicomfs" / "remotes.json").read_text())
    assert set(kept) == {"bay3t"}


def test_a_file_that_cannot_be_looked_at_is_an_error_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def closed(self: Path) -> bool:
        raise PermissionError(13, "Permission denied")

    monkeypatch.delenv("DICOMFS_CONFIG")
    monkeypatch.setattr(Path, "is_file", closed)
    with pytest.raises(configfile.ConfigError, match="cannot read the configuration file"):
        configfile.files_to_read(None)
