"""A real mosquitto on a free loopback port (for tests and benchmarks), stoppable and restartable.

Bound to 127.0.0.1 only and never on a fixed port. `stop()` then `start()` brings it back
on the same port (mosquitto sets SO_REUSEADDR), which is how outages are simulated.
Persistence is off: a restart also forgets retained messages, like a fresh broker.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
    return port


def mosquitto_available() -> bool:
    return Path(MOSQUITTO).exists()


def make_tls_files(directory: Path) -> TlsFiles:
    """A throw-away CA and a server certificate for 127.0.0.1 (needs the openssl CLI)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl is not installed")
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.crt", directory / "ca.key"
    cert, key, csr = directory / "server.crt", directory / "server.key", directory / "server.csr"
    ext = directory / "server.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    sign: list[object] = ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key]
    sign += ["-CAcreateserial", "-out", cert, "-days", "1", "-extfile", ext]
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for args in (
        ["req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "1", "-subj", "/CN=test-ca"],
        ["req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        sign,
    ):
        subprocess.run([openssl, *map(str, args)], check=True, capture_output=True)
    return TlsFiles(ca, cert, key)


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


class Broker:
    """One mosquitto process.

    `users` needs mosquitto_passwd; `acl` is mosquitto ACL text; `tls` serves TLS only;
    `persistent` keeps sessions, queued messages and retained ones across stop/start;
    `options` are further mosquitto.conf lines.
    """

    def __init__(
        self,
        directory: Path,
        *,
        users: dict[str, str] | None = None,
        acl: str | None = None,
        tls: TlsFiles | None = None,
        persistent: bool = False,
        options: tuple[str, ...] = (),
    ) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.host = HOST
        self.port = free_port()
        self.log_path = directory / "mosquitto.log"
        self.config_path = directory / "mosquitto.conf"
        self._process: subprocess.Popen[bytes] | None = None
        self._log_start = 0
        lines = [f"listener {self.port} {HOST}"]
        if tls is not None:
            lines += [f"cafile {tls.ca}", f"certfile {tls.cert}", f"keyfile {tls.key}"]
        lines += [
            # Run as root, mosquitto would switch to user `mosquitto`, which cannot write
            # the log or read the files made here; as anyone else this line changes nothing.
            f"user {pwd.getpwuid(os.geteuid()).pw_name}",
            f"allow_anonymous {'false' if users else 'true'}",
            f"persistence {'true' if persistent else 'false'}",
            f"persistence_location {directory}/",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
        ]
        lines += options
        if users:
            lines.append(f"password_file {self._write_passwords(users)}")
        if acl is not None:
            acl_path = directory / "acl"
            acl_path.write_text(acl)
            lines.append(f"acl_file {acl_path}")
        self.config_path.write_text("\n".join(lines) + "\n")

    def _write_passwords(self, users: dict[str, str]) -> Path:
        if MOSQUITTO_PASSWD is None:
            raise RuntimeError("mosquitto_passwd is not installed")
        path = self.directory / "passwords"
        path.touch(mode=0o600)
        for user, password in users.items():
            subprocess.run(
                [MOSQUITTO_PASSWD, "-b", str(path), user, password],
                check=True,
                capture_output=True,
            )
        return path

    @property
    def pid(self) -> int:
        """The running mosquitto's process id (for measuring its CPU)."""
        if self._process is None:
            raise RuntimeError("mosquitto is not running")
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout_s: float = 5.0) -> None:
        if self.running:
            return
        self._log_start = len(self.log())
        self._process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                _, err = self._process.communicate()
                raise RuntimeError(f"mosquitto exited: {err.decode(errors='replace')}{self.log()}")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.2):
                    self._wait_logged_running(deadline)
                    return
            except OSError:
                time.sleep(0.01)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {HOST}:{self.port}\n{self.log()}")

    def _wait_logged_running(self, deadline: float) -> None:
        """A listening socket is not quite ready: wait for mosquitto's own word too."""
        while time.monotonic() < deadline and " running" not in self.log()[self._log_start :]:
            time.sleep(0.005)

    def kill(self) -> None:
        """SIGKILL: no goodbye, nothing saved (a power cut of the broker's machine)."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        self.stop()

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stderr is not None:
            process.stderr.close()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def main(argv: list[str] | None = None) -> int:
    """`python -m hashbay.tools.broker DIR --ready-file FILE`: a loopback mosquitto for the
    demo, its port written to FILE once it runs; stopped by SIGTERM. SIGINT is left as the
    shell set it (ignored in a script's background job), so Ctrl-C stops the agent first
    and the broker still takes its goodbye."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--ready-file", type=Path, required=True)
    args = parser.parse_args(argv)
    broker = Broker(args.directory)
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda number, _frame: stopping.append(number))
    broker.start()
    try:
        args.ready_file.write_text(f"{broker.port}\n")
        while not stopping and broker.running:
            time.sleep(0.2)
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
