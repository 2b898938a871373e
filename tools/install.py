"""`sudo tools/run install` and `tools/run uninstall`: hashbay as a service on a
Debian-based controller (Raspberry Pi OS), in one idempotent command that says what it did.

Install: the device groups and `hashbay-admin`, the `hashbay` system user, a virtualenv in
/opt/hashbay that sees the distribution's packages (Debian's python3-lgpio is the GPIO
back-end on Raspberry Pi OS), hashbay from this checkout (or a wheel), the example config
as /etc/hashbay/agent.toml unless one exists (never overwritten), the systemd unit; then
`hashbay-agent --check-config` and `systemd-analyze verify`. It enables or starts the
service only when asked. Uninstall keeps /etc/hashbay and /var/lib/hashbay unless
`--purge`, and never removes the user or the groups.

Everything lands under `--root` (default `/`), so it can be run into a throw-away tree:
accounts are then made with `--prefix ROOT` and units enabled with `systemctl --root`.
Runs on the system python3 with the standard library only: nothing is installed yet.
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
SERVICE = "hashbay-agent.service"
USER = "hashbay"
DEVICE_GROUPS = ("dialout", "i2c", "gpio")
ADMIN_GROUP = "hashbay-admin"
VENV = "/opt/hashbay"
CONFIG_DIR = "/etc/hashbay"
STATE_DIR = "/var/lib/hashbay"
UNIT_DIR = "/etc/systemd/system"
GPIO_MODULES = {"lgpio": "lgpio", "rpigpio": "RPi.GPIO"}  # pin_factory -> what it imports
NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", ".run", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
)
EXIT_FAILED = 1
EXIT_NOPERM = 77


class InstallError(Exception):
    """A step that cannot be done; the message says what to do."""


@dataclass(frozen=True)
class Layout:
    """Where everything goes, under `root`."""

    root: Path

    @property
    def live(self) -> bool:
        """Installing onto the running system (systemctl talks to systemd)."""
        return self.root == Path("/")

    def under(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    @property
    def venv(self) -> Path:
        return self.under(VENV)

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def agent(self) -> Path:
        return self.venv / "bin" / "hashbay-agent"

    @property
    def config(self) -> Path:
        return self.under(CONFIG_DIR) / "agent.toml"

    @property
    def unit(self) -> Path:
        return self.under(UNIT_DIR) / SERVICE


class Accounts:
    """Users and groups as the root's /etc/passwd and /etc/group list them."""

    def __init__(self, layout: Layout) -> None:
        self._etc = layout.under("/etc")

    def _rows(self, name: str) -> list[list[str]]:
        try:
            text = (self._etc / name).read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]

    def group(self, name: str) -> list[str] | None:
        return next((row for row in self._rows("group") if row[0] == name), None)

    def user(self, name: str) -> list[str] | None:
        return next((row for row in self._rows("passwd") if row[0] == name), None)

    def groups_of(self, user: str) -> set[str]:
        return {row[0] for row in self._rows("group") if user in row[3].split(",")}

    def ids(self, user: str) -> tuple[int, int] | None:
        row = self.user(user)
        return (int(row[2]), int(row[3])) if row else None


class Installer:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.accounts = Accounts(layout)
        self.prefix = [] if layout.live else ["--prefix", str(layout.root)]

    # -- output and commands ---------------------------------------------------------------

    @staticmethod
    def say(what: str, outcome: str) -> None:
        print(f"  {what}: {outcome}", flush=True)

    @staticmethod
    def run(args: Sequence[str | Path], what: str) -> str:
        try:
            done = subprocess.run(
                [str(a) for a in args], capture_output=True, text=True, check=False
            )
        except FileNotFoundError:
            raise InstallError(f"{what}: {args[0]} not found") from None
        if done.returncode != 0:
            tail = "\n    ".join((done.stderr or done.stdout).strip().splitlines()[-8:])
            raise InstallError(f"{what} failed (exit {done.returncode}):\n    {tail}")
        return done.stdout

    def systemctl(self, *args: str) -> str:
        root = [] if self.layout.live else [f"--root={self.layout.root}"]
        return self.run(["systemctl", *root, *args], f"systemctl {' '.join(args)}")

    # -- install ---------------------------------------------------------------------------

    def install(self, args: argparse.Namespace) -> int:
        layout = self.layout
        print(f"hashbay: installing into {layout.root} from {args.wheel or CHECKOUT}", flush=True)
        self.groups()
        self.user()
        for admin in args.admin:
            self.admin(admin)
        self.venv()
        extras = self.gpio_backend(args.gpio)
        self.package(args.wheel, extras)
        self.directories()
        self.config()
        unit_changed = self.unit()
        if layout.live and unit_changed:
            self.systemctl("daemon-reload")
            self.say("systemctl daemon-reload", "done")
        self.check_config()
        self.verify_unit()
        self.check_gpio_module()
        self.service(enable=args.enable, start=args.start)
        print(
            f"next: sudo {VENV}/bin/hashbay-agent --self-test --config {CONFIG_DIR}/agent.toml "
            "(with the service stopped) to check the wiring",
            flush=True,
        )
        return 0

    def groups(self) -> None:
        for group in (*DEVICE_GROUPS, ADMIN_GROUP):
            if self.accounts.group(group) is not None:
                self.say(f"group {group}", "exists")
                continue
            self.run(["groupadd", *self.prefix, "--system", group], f"groupadd {group}")
            why = "for changers over the control socket" if group == ADMIN_GROUP else "was missing"
            self.say(f"group {group}", f"created ({why})")

    def user(self) -> None:
        wanted = set(DEVICE_GROUPS)
        if self.accounts.user(USER) is None:
            self.run(
                [
                    "useradd",
                    *self.prefix,
                    "--system",
                    "--user-group",
                    "--no-create-home",
                    "--home-dir",
                    STATE_DIR,
                    "--shell",
                    "/usr/sbin/nologin",
                    "--groups",
                    ",".join(DEVICE_GROUPS),
                    USER,
                ],
                f"useradd {USER}",
            )
            self.say(f"user {USER}", f"created (groups {', '.join(DEVICE_GROUPS)})")
            return
        missing = sorted(wanted - self.accounts.groups_of(USER))
        if missing:
            self.run(
                ["usermod", *self.prefix, "--append", "--groups", ",".join(missing), USER],
                f"usermod {USER}",
            )
            self.say(f"user {USER}", f"exists; added to {', '.join(missing)}")
        else:
            self.say(f"user {USER}", "exists, in every device group")

    def admin(self, name: str) -> None:
        if self.accounts.user(name) is None:
            raise InstallError(f"--admin {name}: no such user")
        missing = sorted({USER, ADMIN_GROUP} - self.accounts.groups_of(name))
        if not missing:
            self.say(f"admin {name}", f"already in {USER} and {ADMIN_GROUP}")
            return
        self.run(
            ["usermod", *self.prefix, "--append", "--groups", ",".join(missing), name],
            f"usermod {name}",
        )
        self.say(f"admin {name}", f"added to {', '.join(missing)} (log in again to take effect)")

    def venv(self) -> None:
        layout = self.layout
        cfg = layout.venv / "pyvenv.cfg"
        if layout.python.exists() and "include-system-site-packages = true" in _read(cfg):
            self.say(f"venv {VENV}", "exists, sees the distribution's packages")
            return
        if layout.venv.exists():
            shutil.rmtree(layout.venv)  # made without the distribution's packages: remake it
        self.run(
            [sys.executable, "-m", "venv", "--system-site-packages", layout.venv],
            f"python3 -m venv {VENV}",
        )
        self.say(f"venv {VENV}", "created with --system-site-packages")

    def gpio_backend(self, choice: str) -> str:
        """Which GPIO library the agent will use; returns the pip extra to install."""
        visible = self._imports("lgpio")
        if choice == "distribution" or (choice == "auto" and visible):
            if not visible:
                raise InstallError(
                    "--gpio distribution: lgpio is not importable; "
                    "sudo apt install python3-lgpio, then run this again"
                )
            self.say("GPIO back-end", "the distribution's lgpio (python3-lgpio), as is")
            return ""
        if choice == "pypi" or (choice == "auto" and _is_raspberry_pi()):
            self.say("GPIO back-end", "lgpio from PyPI (the hashbay[pi] extra)")
            return "pi"
        if choice == "none":
            self.say("GPIO back-end", "none (--gpio none)")
        else:
            self.say("GPIO back-end", "none: not a Raspberry Pi and no lgpio here (--gpio pypi)")
        return ""

    def _imports(self, module: str) -> bool:
        """Whether the venv's python finds `module` (found, not imported: importing lgpio
        leaves a FIFO in the working directory)."""
        probe = f"import importlib.util as u, sys; sys.exit(u.find_spec({module!r}) is None)"
        done = subprocess.run(
            [str(self.layout.python), "-P", "-c", probe], capture_output=True, check=False
        )
        return done.returncode == 0

    def package(self, wheel: Path | None, extras: str) -> None:
        with tempfile.TemporaryDirectory(prefix="hashbay-install-") as scratch:
            if wheel is None:
                wheel = self.build_wheel(Path(scratch))
            python = self.layout.python
            pip: list[str | Path] = [python, "-m", "pip", "install", "--quiet"]
            pip.append("--disable-pip-version-check")
            target = f"{wheel}[{extras}]" if extras else str(wheel)
            self.run([*pip, target], "pip install (dependencies)")
            self.run([*pip, "--force-reinstall", "--no-deps", wheel], "pip install hashbay")
        version = self.run([self.layout.agent, "--version"], "hashbay-agent --version").strip()
        self.say(version, f"installed into {VENV}")

    def build_wheel(self, scratch: Path) -> Path:
        """A wheel of this checkout, built from a copy (the checkout stays untouched)."""
        source = copy_source(CHECKOUT, scratch / "src")
        wheels = scratch / "wheels"
        self.run(
            [
                self.layout.python,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--no-deps",
                "-w",
                wheels,
                source,
            ],
            "building the hashbay wheel",
        )
        return next(wheels.glob("hashbay-*.whl"))

    def directories(self) -> None:
        config_dir, state = self.layout.under(CONFIG_DIR), self.layout.under(STATE_DIR)
        config_dir.mkdir(parents=True, exist_ok=True)
        state.mkdir(parents=True, exist_ok=True)
        ids = self.accounts.ids(USER)
        config_dir.chmod(0o750)
        state.chmod(0o750)
        if ids is None or os.geteuid() != 0:
            self.say("ownership", "left as is (not root, or no hashbay user under this root)")
            return
        os.chown(config_dir, 0, ids[1])
        os.chown(state, *ids)
        self.say(CONFIG_DIR, f"root:{USER} 0750")
        self.say(STATE_DIR, f"{USER}:{USER} 0750 (kept by uninstall)")

    def config(self) -> None:
        example = CHECKOUT / "systemd" / "hashbay.toml"
        target = self.layout.config
        shutil.copyfile(example, target.with_suffix(".toml.example"))
        if target.exists():
            self.say(
                f"{CONFIG_DIR}/agent.toml", "kept (never overwritten; the example is beside it)"
            )
            return
        shutil.copyfile(example, target)
        target.chmod(0o640)
        ids = self.accounts.ids(USER)
        if ids is not None and os.geteuid() == 0:
            os.chown(target, 0, ids[1])
        self.say(
            f"{CONFIG_DIR}/agent.toml", "installed from systemd/hashbay.toml: adjust the wiring"
        )

    def unit(self) -> bool:
        source = (CHECKOUT / "systemd" / SERVICE).read_bytes()
        target = self.layout.unit
        if target.exists() and target.read_bytes() == source:
            self.say(f"{UNIT_DIR}/{SERVICE}", "unchanged")
            return False
        existed = target.exists()
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source)
        target.chmod(0o644)
        self.say(f"{UNIT_DIR}/{SERVICE}", "updated" if existed else "installed")
        return True

    def check_config(self) -> None:
        config = self.layout.config
        self.run([self.layout.agent, "--check-config", config], "hashbay-agent --check-config")
        self.say("hashbay-agent --check-config", "ok")

    def verify_unit(self) -> None:
        if shutil.which("systemd-analyze") is None:
            self.say("systemd-analyze verify", "skipped (systemd-analyze not installed)")
            return
        unit = self.layout.unit.read_text(encoding="utf-8")
        if not self.layout.live:  # check the programs this root holds, not the host's
            for path in (VENV, CONFIG_DIR):
                unit = unit.replace(f"{path}/", f"{self.layout.under(path)}/")
        with tempfile.TemporaryDirectory(prefix="hashbay-unit-") as scratch:
            copy = Path(scratch) / SERVICE
            copy.write_text(unit, encoding="utf-8")
            done = subprocess.run(
                ["systemd-analyze", "verify", str(copy)],
                capture_output=True,
                text=True,
                check=False,
            )
        if done.returncode != 0 or done.stderr.strip():
            raise InstallError(f"systemd-analyze verify {SERVICE}:\n    {done.stderr.strip()}")
        self.say("systemd-analyze verify", "ok")

    def check_gpio_module(self) -> None:
        try:
            hardware = tomllib.loads(_read(self.layout.config)).get("hardware", {})
        except tomllib.TOMLDecodeError:
            return  # --check-config has said so already
        factory = hardware.get("pin_factory", "sim") if isinstance(hardware, dict) else "sim"
        module = GPIO_MODULES.get(factory)
        if module is None:
            return
        if self._imports(module):
            self.say(f"pin_factory {factory!r}", f"{module} importable")
        else:
            self.say(
                f"pin_factory {factory!r}",
                f"{module} NOT importable: the agent will exit 69 until it is "
                "(sudo apt install python3-lgpio, or install again with --gpio pypi)",
            )

    def service(self, *, enable: bool, start: bool) -> None:
        if enable:
            self.systemctl("enable", SERVICE)
            self.say(f"systemctl enable {SERVICE}", "done")
        if start:
            self.systemctl("restart", SERVICE)
            self.say(f"systemctl restart {SERVICE}", "done: journalctl -u hashbay-agent -f")
        elif self.layout.live and _active():
            self.say(
                SERVICE, "running the previous code until: sudo systemctl restart hashbay-agent"
            )
        if not enable and not start:
            self.say(SERVICE, "not enabled (install again with --enable --start when ready)")

    # -- uninstall -------------------------------------------------------------------------

    def uninstall(self, args: argparse.Namespace) -> int:
        layout = self.layout
        print(f"hashbay: removing from {layout.root}", flush=True)
        if layout.unit.exists():
            if layout.live:
                self.systemctl("disable", "--now", SERVICE)
            else:
                self.systemctl("disable", SERVICE)
            self.say(SERVICE, "stopped and disabled" if layout.live else "disabled")
            layout.unit.unlink()
            self.say(f"{UNIT_DIR}/{SERVICE}", "removed")
            if layout.live:
                self.systemctl("daemon-reload")
        else:
            self.say(f"{UNIT_DIR}/{SERVICE}", "not installed")
        _remove(layout.venv, f"venv {VENV}", self.say)
        for path in (CONFIG_DIR, STATE_DIR):
            if args.purge:
                _remove(layout.under(path), path, self.say)
            elif layout.under(path).exists():
                self.say(path, "kept (--purge removes it)")
        self.say(
            f"user {USER}, group {ADMIN_GROUP}",
            f"kept (files may still belong to them; userdel {USER} && groupdel {ADMIN_GROUP} "
            "removes them)",
        )
        return 0


def copy_source(checkout: Path, target: Path) -> Path:
    """The checkout without its caches, virtualenv, git history, sockets and FIFOs."""

    def ignored(directory: str, names: list[str]) -> set[str]:
        special = {n for n in names if not _plain(Path(directory) / n)}
        return set(NOT_COPIED(directory, names)) | special

    shutil.copytree(checkout, target, symlinks=True, ignore=ignored)
    return target


def _plain(path: Path) -> bool:
    """A file, directory or symlink: what a source tree is made of."""
    mode = path.lstat().st_mode
    return stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return ""


def _is_raspberry_pi() -> bool:
    return "Raspberry Pi" in _read(Path("/proc/device-tree/model"))


def _active() -> bool:
    done = subprocess.run(
        ["systemctl", "is-active", "--quiet", SERVICE], capture_output=True, check=False
    )
    return done.returncode == 0


def _remove(path: Path, name: str, say: Callable[[str, str], None]) -> None:
    if path.exists():
        shutil.rmtree(path)
        say(name, "removed")
    else:
        say(name, "not there")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="tools/run", description="Install hashbay as a service on this controller."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("install", "install or update"), ("uninstall", "remove")):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument(
            "--root", type=Path, default=Path("/"), help="install under this directory (default /)"
        )
    install = commands.choices["install"]
    install.add_argument("--wheel", type=Path, help="install this wheel instead of the checkout")
    install.add_argument(
        "--gpio",
        choices=("auto", "distribution", "pypi", "none"),
        default="auto",
        help="GPIO back-end: the distribution's python3-lgpio, lgpio from PyPI (hashbay[pi]), "
        "or none; auto: the first that applies",
    )
    install.add_argument(
        "--admin",
        action="append",
        default=[],
        metavar="USER",
        help=f"add USER to {USER} and {ADMIN_GROUP} (may change things over the control socket)",
    )
    install.add_argument("--enable", action="store_true", help="enable the service at boot")
    install.add_argument("--start", action="store_true", help="(re)start the service now")
    commands.choices["uninstall"].add_argument(
        "--purge", action="store_true", help=f"also remove {CONFIG_DIR} and {STATE_DIR}"
    )
    args = parser.parse_args(argv)
    args.root = args.root.resolve()
    if getattr(args, "wheel", None) is not None:
        args.wheel = args.wheel.resolve()
    if args.command == "install" and args.start and args.root != Path("/"):
        parser.error("--start needs the running system (--root /)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    layout = Layout(args.root)
    if layout.live and os.geteuid() != 0:
        print(
            f"tools/run {args.command}: run as root (sudo tools/run {args.command})",
            file=sys.stderr,
        )
        return EXIT_NOPERM
    installer = Installer(layout)
    try:
        if args.command == "install":
            return installer.install(args)
        return installer.uninstall(args)
    except InstallError as exc:
        print(f"{args.command} failed: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
