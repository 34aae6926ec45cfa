"""contrib/systemd/dicomfs.service: a unit systemd accepts, whose mount the lab can see."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).parent.parent
TEMPLATE = REPO / "contrib" / "systemd" / "dicomfs.service"
VENV_DICOMFS = REPO / ".venv" / "bin" / "dicomfs"

# Each gives the service a mount namespace of its own, where the FUSE mount would be
# seen by the service alone.
OWN_MOUNT_NAMESPACE = {
    "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "PrivateIPC",
    "PrivateMounts", "ProtectProc", "ProcSubset", "ProtectKernelTunables",
    "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "ReadWritePaths",
    "ReadOnlyPaths", "InaccessiblePaths", "ExecPaths", "NoExecPaths", "BindPaths",
    "BindReadOnlyPaths", "TemporaryFileSystem", "RootDirectory", "RootImage", "MountAPIVFS",
    "PrivateUsers", "NetworkNamespacePath", "IPCNamespacePath",
}  # fmt: skip
# Each sets no_new_privs for a service with User= (systemd.exec(5)), which makes the
# kernel ignore fusermount3's setuid bit: the mount fails.
NO_NEW_PRIVILEGES = {
    "NoNewPrivileges", "SystemCallFilter", "SystemCallArchitectures", "SystemCallLog",
    "RestrictAddressFamilies", "RestrictNamespaces", "LockPersonality", "RestrictRealtime",
    "RestrictSUIDSGID", "MemoryDenyWriteExecute", "ProtectHostname", "ProtectClock",
    "RestrictFileSystems", "DynamicUser",
}  # fmt: skip
# Each limits the devices the service may open: /dev/fuse among them.
DEVICE_POLICY = {"DevicePolicy", "DeviceAllow"}


def settings(unit: str) -> dict[str, list[str]]:
    """Every key of the unit with its values, in order (comments and sections left out)."""
    found: dict[str, list[str]] = {}
    for line in unit.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        found.setdefault(key.strip(), []).append(value.strip())
    return found


def rendered(into: Path) -> Path:
    """The template as scripts/install-service installs it, in a directory of its own."""
    unit = into / "dicomfs.service"
    unit.write_text(TEMPLATE.read_text().replace("@DICOMFS@", str(VENV_DICOMFS)))
    return unit


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    """systemd-analyze verify loads the unit into a manager of its own, in test mode: no
    systemd as PID 1 is needed (systemd 252 has no --offline for verify, and needs
    none). --recursive-errors=no: only this unit decides, not the host's
    network-online.target. --man=no: the unit names no man page, the host may have none."""
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", "--recursive-errors=no", str(unit)],
        capture_output=True, text=True, timeout=120, cwd=unit.parent,
    )  # fmt: skip


def test_the_service_can_make_a_mount_the_lab_sees() -> None:
    keys = set(settings(TEMPLATE.read_text()))
    assert not keys & OWN_MOUNT_NAMESPACE
    assert not keys & NO_NEW_PRIVILEGES
    assert not keys & DEVICE_POLICY


def test_the_service_runs_unprivileged_and_says_when_it_is_ready() -> None:
    unit = settings(TEMPLATE.read_text())
    assert unit["User"] == ["dicomfs"]
    assert unit["Group"] == ["dicomfs"]
    assert unit["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    # CAP_SYS_ADMIN only for setuid fusermount3 to reach; the service never holds it.
    assert set(unit["CapabilityBoundingSet"][0].split()) == {"CAP_NET_BIND_SERVICE",
                                                            "CAP_SYS_ADMIN"}  # fmt: skip
    assert unit["Type"] == ["notify"]
    assert unit["NotifyAccess"] == ["main"]
    assert unit["Restart"] == ["on-failure"]
    assert unit["ExecStart"] == ["@DICOMFS@ --config /etc/dicomfs/dicomfs.toml serve"]
    assert unit["RestartPreventExitStatus"] == ["2"]  # a bad configuration: no restart loop


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    result = verify(rendered(tmp_path))
    # An unknown or misspelt key is a warning, not an error: it must not pass unseen.
    about_the_unit = [line for line in result.stderr.splitlines() if "dicomfs.service" in line]
    assert result.returncode == 0, result.stderr
    assert about_the_unit == []


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_a_misspelt_key_would_be_seen(tmp_path: Path) -> None:
    """The check above can fail: systemd-analyze names a key it does not know."""
    unit = rendered(tmp_path)
    unit.write_text(unit.read_text().replace("KillMode=", "KillMood="))
    assert "Unknown key 'KillMood'" in verify(unit).stderr
