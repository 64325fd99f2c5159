"""The runtime directory: whose it is, who may write it, and what happens when it cannot
be written (issue 12). fakehw never changes the mode of a directory it did not create,
keeps its own files private, and says what is wrong in one line."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import fakehw, wait_for

from fakehw.service.client import Client
from fakehw.tools.shims import SHIMS

TOOLS = {
    "fakehw daemon start": ["-m", "fakehw", "daemon", "start"],
    "fakehw daemon status": ["-m", "fakehw", "daemon", "status"],
    "fake-nvidia-smi": ["-m", "fakehw.smi"],
    "fake-gpustat": ["-m", "fakehw.gpustat"],
    "fake-nvitop -1": ["-m", "fakehw.nvitop", "-1"],
    "fakehw exporter": ["-m", "fakehw", "exporter", "--listen", "127.0.0.1:0"],
    "fakehw exec": ["-m", "fakehw", "exec", "--", "true"],
    "fakehw shellenv": ["-m", "fakehw", "shellenv"],
    "fake-train": ["-m", "fakehw.train", "--gpus", "8", "--exit-after-steps", "1"],
}


def run_tool(
    argv: list[str], runtime: Path | str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FAKEHW_RUNTIME_DIR": str(runtime)}
    return subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def shared_dirs() -> Iterator[dict[str, Path]]:
    """Directories of the user's with the modes a user might point FAKEHW_RUNTIME_DIR at."""
    root = Path(tempfile.mkdtemp(prefix="fhw-modes-"))
    made = {}
    for name, mode in (("sticky", 0o1777), ("open", 0o777), ("group", 0o770), ("readable", 0o755)):
        path = root / name
        path.mkdir()
        path.chmod(mode)
        made[name] = path
    yield made
    for path in made.values():
        with contextlib.suppress(OSError):
            fakehw("daemon", "stop", env={**os.environ, "FAKEHW_RUNTIME_DIR": str(path)})
    subprocess.run(["rm", "-rf", str(root)], check=False)


@pytest.mark.parametrize("name", ["sticky", "open", "group"])
def test_a_directory_others_can_write_is_refused_and_left_as_it_was(
    shared_dirs: dict[str, Path], name: str
) -> None:
    directory = shared_dirs[name]
    before = mode_of(directory)
    for tool in ("fakehw daemon status", "fakehw daemon start", "fake-nvidia-smi"):
        result = run_tool(TOOLS[tool], directory)
        assert mode_of(directory) == before, tool  # never re-moded
        assert result.returncode != 0, tool
        assert "is writable by others" in result.stderr + result.stdout, tool
        assert "Traceback" not in result.stderr, tool
    assert list(directory.iterdir()) == []  # and nothing planted in it


def test_a_directory_only_readable_by_others_is_used_as_it_is(
    shared_dirs: dict[str, Path],
) -> None:
    directory = shared_dirs["readable"]
    assert run_tool(TOOLS["fakehw daemon status"], directory).returncode == 3
    assert run_tool(TOOLS["fakehw daemon start"], directory).returncode == 0
    assert run_tool(["-m", "fakehw.smi", "-L"], directory).returncode == 0
    assert mode_of(directory) == 0o755
    # what fakehw writes there is private
    for name in ("daemon.sock", "daemon.pid", "daemon.log", "daemon.lock", "start.lock"):
        assert mode_of(directory / name) == 0o600, name


def test_every_file_of_the_daemon_is_private(
    runtime_dir: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    runtime_dir.mkdir(mode=0o700)
    (runtime_dir / "daemon.log").write_text("left by an older fakehw\n")
    (runtime_dir / "daemon.log").chmod(0o644)
    assert fakehw("daemon", "start").returncode == 0
    with Client.connect(autostart=False) as client:
        client.request("attach", pid=sleeper.pid, name="p", gpus=[0])
    wait_for(lambda: (runtime_dir / "state.npz").exists(), timeout=5)
    assert fakehw("exec", "--", "true").returncode == 0
    for path in runtime_dir.rglob("*"):
        if path.is_symlink() or path.is_dir():
            continue
        expected = 0o700 if path.name in SHIMS else 0o600  # the programs on PATH
        assert mode_of(path) == expected, path
    assert mode_of(runtime_dir) == 0o700


def test_a_relative_runtime_dir_is_refused(tmp_path: Path) -> None:
    try:
        for tool in ("fakehw daemon start", "fake-nvidia-smi", "fake-gpustat"):
            result = subprocess.run([sys.executable, *TOOLS[tool]], cwd=tmp_path,
                                    capture_output=True, text=True, timeout=30, check=False,
                                    env={**os.environ, "FAKEHW_RUNTIME_DIR": "rt"})  # fmt: skip
            assert result.returncode != 0, tool
            assert "FAKEHW_RUNTIME_DIR must be an absolute path, not 'rt'" in (
                result.stderr + result.stdout
            ), tool
            assert "Traceback" not in result.stderr
        assert not (tmp_path / "rt").exists()
    finally:  # code that took the path would have left a daemon there
        fakehw("daemon", "stop", env={**os.environ, "FAKEHW_RUNTIME_DIR": str(tmp_path / "rt")})


def test_a_socket_path_too_long_for_unix_sockets_is_explained() -> None:
    deep = Path(tempfile.mkdtemp(prefix="fhw-long-")) / ("d" * 100)
    result = run_tool(TOOLS["fakehw daemon start"], deep)
    assert result.returncode == 1
    assert "more than the 107 a Unix socket allows" in result.stderr
    assert "None" not in result.stderr and "Traceback" not in result.stderr


# ------------------------------------------------------------ unwritable, full
def _mount_tmpfs(path: Path, options: str) -> bool:
    if os.geteuid() != 0:
        return False
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                            capture_output=True, check=False)  # fmt: skip
    return result.returncode == 0


@pytest.fixture
def unwritable_dir() -> Iterator[Path]:
    """A runtime directory of the user's that cannot be written: mode 0500 for a user,
    a read-only mount for root (whom modes do not stop)."""
    path = Path(tempfile.mkdtemp(prefix="fhw-ro-"))
    mounted = _mount_tmpfs(path, "ro,mode=0700")
    if not mounted:
        if os.geteuid() == 0:
            pytest.skip("root cannot make a read-only directory without mount")
        path.chmod(0o500)
    yield path
    if mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)
    path.chmod(0o700)
    path.rmdir()


@pytest.mark.parametrize("tool", sorted(set(TOOLS) - {"fakehw daemon status"}))  # status only reads
def test_an_unwritable_runtime_dir_is_explained_by_every_tool(
    unwritable_dir: Path, tool: str
) -> None:
    result = run_tool(TOOLS[tool], unwritable_dir)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    said = (result.stderr + result.stdout).strip()
    assert str(unwritable_dir) in said and ("Read-only file system" in said or
                                            "Permission denied" in said), said  # fmt: skip


def fill(filler: Path) -> None:
    """Write ``filler`` until its filesystem has no space left."""
    with open(filler, "wb", buffering=0) as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 4096)


@pytest.fixture
def full_disk() -> Iterator[Path]:
    """A runtime directory on a filesystem with no space left (root only: a tmpfs)."""
    path = Path(tempfile.mkdtemp(prefix="fhw-full-"))
    if not _mount_tmpfs(path, "size=256k,mode=0700"):
        path.rmdir()
        pytest.skip("needs root to mount a small tmpfs")
    runtime = path / "rt"
    runtime.mkdir(mode=0o700)
    fill(path / "filler")
    yield runtime
    fakehw("daemon", "stop", env={**os.environ, "FAKEHW_RUNTIME_DIR": str(runtime)})
    subprocess.run(["umount", "-l", str(path)], check=False)
    with contextlib.suppress(OSError):
        path.rmdir()


def test_a_full_disk_at_start_is_explained_and_leaves_nothing_half_written(full_disk: Path) -> None:
    result = run_tool(TOOLS["fakehw daemon start"], full_disk)
    assert result.returncode == 1
    assert "No space left on device" in result.stderr, result.stderr
    assert "does not answer" not in result.stderr and "Traceback" not in result.stderr
    assert not list(full_disk.glob("*.tmp"))
    assert not (full_disk / "daemon.sock").exists()
    shimmed = run_tool(TOOLS["fakehw exec"], full_disk)
    assert shimmed.returncode == 1 and "No space left on device" in shimmed.stderr
    assert "Traceback" not in shimmed.stderr and not list(full_disk.rglob("*.tmp"))


def test_a_disk_that_fills_while_serving_leaves_no_half_written_state_and_saves_again(
    full_disk: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    filler = full_disk.parent / "filler"
    filler.unlink()  # room to start: the daemon writes its pid file, lock and log
    assert run_tool(TOOLS["fakehw daemon start"], full_disk).returncode == 0
    fill(filler)
    with Client.connect(root=full_disk, autostart=False) as client:
        client.request("attach", pid=sleeper.pid, name="p", gpus=[0], phase="train")
        time.sleep(3)  # saves on change and every 2 s: each fails
        assert client.request("status")["processes"]
        assert not list(full_disk.glob("*.tmp"))
        filler.unlink()
        # with room again, the state is saved again
        saved = (
            (full_disk / "state.npz").stat().st_mtime if (full_disk / "state.npz").exists() else 0
        )
        wait_for(lambda: (full_disk / "state.npz").exists()
                 and (full_disk / "state.npz").stat().st_mtime > saved, timeout=10)  # fmt: skip


def test_a_runtime_dir_that_is_a_symlink_is_refused_as_one(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    result = fakehw("daemon", "start", env={**os.environ, "FAKEHW_RUNTIME_DIR": str(link)})
    assert result.returncode != 0 and "is a symbolic link" in result.stderr, result.stderr
    assert str(real) in result.stderr and not (real / "daemon.sock").exists()


def test_dot_dot_after_a_symlink_goes_where_the_kernel_goes(tmp_path: Path) -> None:
    """FAKEHW_RUNTIME_DIR=/x/lnk/../rt: the shell and the kernel resolve lnk first; a
    textual clean-up to /x/rt would make viewers and the daemon disagree with `ls`."""
    target_parent = tmp_path / "elsewhere"
    (target_parent / "inner").mkdir(parents=True)
    (tmp_path / "lnk").symlink_to(target_parent / "inner")
    env = {**os.environ, "FAKEHW_RUNTIME_DIR": f"{tmp_path}/lnk/../rt"}
    try:
        assert fakehw("daemon", "start", env=env).returncode == 0
        assert (target_parent / "rt" / "daemon.sock").exists()
        assert not (tmp_path / "rt").exists()
    finally:
        fakehw("daemon", "stop", env=env)


def test_an_ipv6_tcp_address_needs_its_brackets(runtime_dir: Path) -> None:
    for address in ("[::1:0", "::1:0", "[::1]]:0"):
        refused = fakehw("daemon", "start", "--tcp", address)
        assert refused.returncode == 2 and "IPv6" in refused.stderr, (address, refused.stderr)
    assert not runtime_dir.exists() or not (runtime_dir / "daemon.sock").exists()


@pytest.mark.parametrize("command", [["shellenv"], ["exec", "--", "true"]])
def test_a_runtime_dir_with_a_colon_is_refused_where_it_would_go_on_path(
    tmp_path: Path, command: list[str]
) -> None:
    """PATH splits at ':': `export PATH=/tmp/a:b/bin:$PATH` would put neither directory
    first, and the real nvidia-smi (or none) would answer to `nvidia-smi`."""
    root = tmp_path / "a:b"
    result = fakehw(*command, env={**os.environ, "FAKEHW_RUNTIME_DIR": str(root)})
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert f"the runtime directory {root} has a ':'" in result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr
