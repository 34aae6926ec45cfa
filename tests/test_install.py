"""The `dicomfs` command on the PATH, without hiding dcmtk's tools behind pynetdicom's."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).parent.parent
LINK = REPO / "scripts" / "link"
VENV_DICOMFS = REPO / ".venv" / "bin" / "dicomfs"
# pynetdicom installs tools of these names into .venv/bin; they take other options.
DICOM_TOOLS = ("storescu", "findscu", "movescu", "getscu")


def link(*args: str, path: str, home: Path | None = None, as_nobody: bool = False) -> str:
    env = {**os.environ, "PATH": path, "HOME": str(home or os.environ.get("HOME", "/"))}
    wrap = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if as_nobody else []
    result = subprocess.run([*wrap, str(LINK), *args], capture_output=True, text=True, env=env,
                            timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stderr


@pytest.fixture
def home() -> Iterator[Path]:
    """A home directory any user can write to (pytest's own are its user's only)."""
    path = Path(tempfile.mkdtemp(prefix="dicomfs-home-"))
    path.chmod(0o777)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_the_link_directory_receives_dicomfs_only(tmp_path: Path) -> None:
    assert all((VENV_DICOMFS.parent / tool).exists() for tool in DICOM_TOOLS)  # the danger
    bin_dir = tmp_path / "bin"
    said = link(str(bin_dir), path="/usr/bin:/bin")
    assert [entry.name for entry in bin_dir.iterdir()] == ["dicomfs"]
    assert (bin_dir / "dicomfs").resolve() == VENV_DICOMFS.resolve()
    assert f"{bin_dir} is not on your PATH" in said
    search = f"{bin_dir}:/usr/bin:/bin"
    assert shutil.which("dicomfs", path=search) == str(bin_dir / "dicomfs")
    for tool in DICOM_TOOLS:
        found = shutil.which(tool, path=search)
        assert found is None or Path(found).parent == Path("/usr/bin"), found
    version = subprocess.run([bin_dir / "dicomfs", "--version"], capture_output=True, text=True)
    assert version.stdout.startswith("dicomfs, version")
    # Again, with the directory on the PATH: nothing to do, nothing to say.
    assert link(str(bin_dir), path=search) == ""
    assert [entry.name for entry in bin_dir.iterdir()] == ["dicomfs"]


def test_a_file_of_that_name_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "dicomfs").write_text("#!/bin/sh\necho mine\n")
    said = link(str(tmp_path), path=f"{tmp_path}:/usr/bin:/bin")
    assert "left alone" in said
    assert (tmp_path / "dicomfs").read_text() == "#!/bin/sh\necho mine\n"


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv to drop root")
def test_a_user_gets_the_link_in_local_bin(home: Path) -> None:
    said = link(path="/usr/bin:/bin", home=home, as_nobody=os.getuid() == 0)
    local_bin = home / ".local" / "bin"
    assert [entry.name for entry in local_bin.iterdir()] == ["dicomfs"]
    assert (local_bin / "dicomfs").resolve() == VENV_DICOMFS.resolve()
    assert f"{local_bin} is not on your PATH" in said


def checkout_with_a_noting_venv(tmp_path: Path) -> Path:
    """scripts/install in a checkout of its own, whose .venv's python only notes what it
    is asked to do, and whose system packages are all there."""
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    shutil.copy2(REPO / "scripts" / "install", root / "scripts" / "install")
    (root / "pyproject.toml").write_text("")
    for path, script in (
        (root / "scripts" / "link", "#!/bin/sh\n"),
        (root / ".venv" / "bin" / "python", f'#!/bin/sh\necho "$@" >> {root}/asked\n'),
        (tmp_path / "bin" / "dpkg", "#!/bin/sh\n"),
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(script)
        path.chmod(0o755)
    return root


def install(root: Path, *args: str) -> tuple[str, list[str]]:
    """What scripts/install said, and the pip commands it ran."""
    path = f"{root.parent / 'bin'}:/usr/bin:/bin"
    result = subprocess.run([root / "scripts" / "install", *args], capture_output=True, text=True,
                            env={**os.environ, "PATH": path}, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    asked = root / "asked"
    lines = asked.read_text().splitlines() if asked.exists() else []
    asked.unlink(missing_ok=True)
    return result.stderr, [line for line in lines if line.startswith("-m pip install -q -e")]


def test_after_the_test_install_the_plain_one_has_nothing_to_do(tmp_path: Path) -> None:
    root = checkout_with_a_noting_venv(tmp_path)
    said, pip = install(root, "--test")
    assert pip == ["-m pip install -q -e .[test]"]
    assert "Installing dicomfs[test]" in said
    assert install(root) == ("", [])  # as scripts/run after scripts/test
    assert install(root, "--test") == ("", [])
    # A changed pyproject.toml is installed again, by either.
    later = time.time() + 10
    os.utime(root / "pyproject.toml", (later, later))
    assert install(root)[1] == ["-m pip install -q -e ."]


def test_the_readme_does_not_suggest_activating_the_virtualenv() -> None:
    readme = (REPO / "README.md").read_text()
    assert "source .venv/bin/activate" not in readme
    assert "scripts/link" in readme
