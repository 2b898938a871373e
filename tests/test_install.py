"""`tools/run install` / `uninstall` into a throw-away root, as on a board.

Real: the virtualenv (made with --system-site-packages), pip installing the hashbay wheel
(built once per run from a copy of this checkout), `hashbay-agent --check-config`,
`systemd-analyze verify`, files, modes and ownership. Stubbed, only at that edge:
`useradd`, `groupadd`, `usermod` and `systemctl`, which record their arguments and, given
`--prefix`, edit the root's /etc/passwd and /etc/group as the real ones do (and refuse
without it: the tests must never touch this machine's accounts or services).

The board's "distribution packages" are this test environment's: a .pth in a user site
(PYTHONUSERBASE) that a venv with system site packages reads, so the install's
dependencies are found there and pip never reaches an index (PIP_NO_INDEX).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from hashbay.tools.install import copy_source

CHECKOUT = Path(__file__).resolve().parent.parent
RUN = CHECKOUT / "tools" / "run"
UNIT = (CHECKOUT / "systemd" / "hashbay-agent.service").read_bytes()
EXAMPLE = (CHECKOUT / "systemd" / "hashbay.toml").read_bytes()
SERVICE = "hashbay-agent.service"

STUB = textwrap.dedent(
    """\
    #!{python}
    import json, os, sys
    name, args = os.path.basename(sys.argv[0]), sys.argv[1:]
    with open(os.environ["HASHBAY_STUB_LOG"], "a") as log:
        log.write(json.dumps([name, *args]) + "\\n")
    if name == "systemctl":
        sys.exit(3 if "is-active" in args else 0)
    if "--prefix" not in args:
        sys.exit("stub: refusing to change this machine's accounts")
    etc = os.path.join(args[args.index("--prefix") + 1], "etc")

    def rows(file):
        with open(os.path.join(etc, file)) as f:
            return [line.rstrip("\\n").split(":") for line in f if line.strip()]

    def save(file, table):
        with open(os.path.join(etc, file), "w") as f:
            f.writelines(":".join(row) + "\\n" for row in table)

    def join(groups, user, table):
        for group in groups.split(","):
            row = next((r for r in table if r[0] == group), None)
            if row is None:
                sys.exit(f"{{name}}: group '{{group}}' does not exist")
            row[3] = ",".join(filter(None, [*row[3].split(","), user]))

    groups, passwd, who = rows("group"), rows("passwd"), args[-1]
    if name == "groupadd":
        groups.append([who, "x", str(900 + len(groups)), ""])
    elif name == "useradd":
        gid = str(900 + len(groups))
        groups.append([who, "x", gid, ""])
        passwd.append([who, "x", gid, gid, "", args[args.index("--home-dir") + 1], "/bin/false"])
        join(args[args.index("--groups") + 1], who, groups)
    elif name == "usermod":
        join(args[args.index("--groups") + 1], who, groups)
    save("group", groups)
    save("passwd", passwd)
    """
)


@dataclass
class Board:
    """A throw-away root and the environment `tools/run` runs in there."""

    root: Path
    env: dict[str, str]
    log: Path
    wheel: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        self.log.write_text("")
        return subprocess.run(
            [str(RUN), *args, "--root", str(self.root)],
            env=self.env,
            cwd=CHECKOUT,
            capture_output=True,
            text=True,
            timeout=300,
        )

    def install(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run("install", "--wheel", str(self.wheel), *args)

    def calls(self) -> list[list[str]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def path(self, where: str) -> Path:
        return self.root / where.lstrip("/")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """hashbay's wheel, built once from a copy of the checkout with this environment's
    setuptools (no build isolation, so no index is needed)."""
    scratch = tmp_path_factory.mktemp("wheel")
    source = copy_source(CHECKOUT, scratch / "src")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(scratch / "wheels"),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    return next((scratch / "wheels").glob("hashbay-*.whl"))


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Board:
    base = tmp_path_factory.mktemp("board")
    root = base / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n"
    )
    (root / "etc" / "group").write_text("root:x:0:\ndialout:x:20:\nalice:x:1000:\n")
    stubs = base / "stubs"
    stubs.mkdir()
    for name in ("useradd", "groupadd", "usermod", "systemctl"):
        (stubs / name).write_text(STUB.format(python=sys.executable))
        (stubs / name).chmod(0o755)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    user_site = base / "userbase" / "lib" / version / "site-packages"
    user_site.mkdir(parents=True)
    (user_site / "distribution.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))} | {
        "PATH": f"{stubs}:{os.environ['PATH']}",
        "PYTHONUSERBASE": str(base / "userbase"),
        "PIP_NO_INDEX": "1",
        "HASHBAY_STUB_LOG": str(base / "calls.log"),
    }
    return Board(root, env, base / "calls.log", wheel)


@pytest.fixture(scope="module")
def fresh(board: Board) -> subprocess.CompletedProcess[str]:
    """The first install onto the empty root, with alice as an administrator."""
    done = board.install("--admin", "alice")
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_a_fresh_install_makes_the_accounts_and_says_so(
    board: Board, fresh: subprocess.CompletedProcess[str]
) -> None:
    prefix = ["--prefix", str(board.root)]
    assert board.calls() == [
        ["groupadd", *prefix, "--system", "i2c"],
        ["groupadd", *prefix, "--system", "gpio"],
        ["groupadd", *prefix, "--system", "hashbay-admin"],
        [
            "useradd",
            *prefix,
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/var/lib/hashbay",
            "--shell",
            "/usr/sbin/nologin",
            "--groups",
            "dialout,i2c,gpio",
            "hashbay",
        ],
        ["usermod", *prefix, "--append", "--groups", "hashbay,hashbay-admin", "alice"],
    ]  # and no systemctl: neither enabled nor started unless asked
    out = fresh.stdout
    assert "group dialout: exists" in out
    assert "group gpio: created (was missing)" in out
    assert "user hashbay: created (groups dialout, i2c, gpio)" in out
    assert "admin alice: added to hashbay, hashbay-admin" in out
    assert "venv /opt/hashbay: created with --system-site-packages" in out
    assert "hashbay-agent 0.1.0: installed into /opt/hashbay" in out
    assert "/etc/hashbay/agent.toml: installed from systemd/hashbay.toml" in out
    assert "hashbay-agent --check-config: ok" in out
    assert "hashbay-agent.service: not enabled" in out


def test_the_venv_runs_the_installed_agent_with_the_distributions_packages(
    board: Board, fresh: subprocess.CompletedProcess[str]
) -> None:
    venv = board.path("/opt/hashbay")
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import hashbay, lgpio; print(hashbay.__file__)"],
        env=board.env | {"LG_WD": str(board.root)},  # lgpio's FIFO lands there
        cwd=board.root,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(venv))  # the installed copy, not the checkout
    # lgpio came from "the distribution" (here: this test environment), not from pip
    assert "GPIO back-end: the distribution's lgpio (python3-lgpio), as is" in fresh.stdout
    assert "pin_factory 'lgpio': lgpio importable" in fresh.stdout
    assert not list((venv / "lib").glob("python3*/site-packages/lgpio*"))


def test_config_unit_and_state_land_with_their_modes_and_owners(
    board: Board, fresh: subprocess.CompletedProcess[str]
) -> None:
    config = board.path("/etc/hashbay/agent.toml")
    assert config.read_bytes() == EXAMPLE
    assert board.path("/etc/hashbay/agent.toml.example").read_bytes() == EXAMPLE
    assert board.path(f"/etc/systemd/system/{SERVICE}").read_bytes() == UNIT
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    assert stat.S_IMODE(board.path("/etc/hashbay").stat().st_mode) == 0o750
    state = board.path("/var/lib/hashbay")
    assert stat.S_IMODE(state.stat().st_mode) == 0o750
    if os.geteuid() == 0:
        hashbay = next(
            line.split(":")
            for line in board.path("/etc/passwd").read_text().splitlines()
            if line.startswith("hashbay:")
        )
        assert (state.stat().st_uid, state.stat().st_gid) == (int(hashbay[2]), int(hashbay[3]))
        assert (config.stat().st_uid, config.stat().st_gid) == (0, int(hashbay[3]))
    if shutil.which("systemd-analyze"):
        assert "systemd-analyze verify: ok" in fresh.stdout


def test_installing_again_changes_nothing_it_need_not_and_keeps_the_operators_config(
    board: Board, fresh: subprocess.CompletedProcess[str]
) -> None:
    config = board.path("/etc/hashbay/agent.toml")
    edited = EXAMPLE.replace(b'name = "miner-01"', b'name = "miner-17"')
    config.write_bytes(edited)
    again = board.install("--admin", "alice", "--enable")
    assert again.returncode == 0, again.stdout + again.stderr
    assert board.calls() == [["systemctl", f"--root={board.root}", "enable", SERVICE]]
    assert config.read_bytes() == edited
    out = again.stdout
    assert "/etc/hashbay/agent.toml: kept (never overwritten" in out
    assert "user hashbay: exists, in every device group" in out
    assert "admin alice: already in hashbay and hashbay-admin" in out
    assert "venv /opt/hashbay: exists" in out
    assert f"/etc/systemd/system/{SERVICE}: unchanged" in out
    assert f"systemctl enable {SERVICE}: done" in out


def test_a_broken_config_fails_the_install_and_nothing_is_enabled(
    board: Board, fresh: subprocess.CompletedProcess[str]
) -> None:
    config = board.path("/etc/hashbay/agent.toml")
    kept = config.read_bytes()
    config.write_text(EXAMPLE.decode().replace("psu_address = 0x58", "psu_address = 0x99"))
    try:
        done = board.install("--enable")
    finally:
        config.write_bytes(kept)
    assert done.returncode == 1
    assert "hashbay-agent --check-config failed" in done.stderr
    assert "hardware.psu_address" in done.stderr
    assert not [call for call in board.calls() if call[0] == "systemctl"]


def test_starting_is_only_for_the_running_system(board: Board) -> None:
    done = board.install("--start")
    assert done.returncode == 2
    assert "--start needs the running system" in done.stderr


def test_uninstall_keeps_config_and_state_until_purged(
    board: Board, fresh: subprocess.CompletedProcess[str]
) -> None:
    removed = board.run("uninstall")
    assert removed.returncode == 0, removed.stderr
    assert board.calls() == [["systemctl", f"--root={board.root}", "disable", SERVICE]]
    assert not board.path("/opt/hashbay").exists()
    assert not board.path(f"/etc/systemd/system/{SERVICE}").exists()
    assert board.path("/etc/hashbay/agent.toml").exists()
    assert board.path("/var/lib/hashbay").is_dir()
    assert "/var/lib/hashbay: kept (--purge removes it)" in removed.stdout
    purged = board.run("uninstall", "--purge")
    assert purged.returncode == 0, purged.stderr
    assert board.calls() == []  # nothing left to disable
    assert not board.path("/etc/hashbay").exists()
    assert not board.path("/var/lib/hashbay").exists()
    assert "hashbay" in board.path("/etc/passwd").read_text()  # users are never removed
