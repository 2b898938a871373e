"""`hashbay-agent`: command line, start-up checks and exit codes (sysexits where they fit).

Everything that can be wrong before the hardware is touched (arguments, config, state
and runtime directories) is checked here and reported as one line, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import structlog

from hashbay import __version__
from hashbay.agent.core.quoting import clip
from hashbay.agent.daemon.app import run_agent
from hashbay.agent.daemon.config import Config, default_config_path, load_config
from hashbay.agent.daemon.instance_lock import HardwareBusy, InstanceLock
from hashbay.agent.daemon.logsetup import RecentEvents, configure_logging
from hashbay.agent.daemon.sdnotify import SystemdNotifier
from hashbay.agent.daemon.supervisor import EXIT_SOFTWARE
from hashbay.agent.selftest import render
from hashbay.agent.selftest.report import Check, Report
from hashbay.agent.selftest.walk import run_self_test
from hashbay.drivers.errors import ConfigError, HardwareError

EXIT_FAILED = 1  # a self-test check failed
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE: a device the config names is missing
EXIT_CANTCREAT = 73  # EX_CANTCREAT: state or runtime directory unusable
EXIT_TEMPFAIL = 75  # EX_TEMPFAIL: another hashbay process is driving the hardware
EXIT_CONFIG = 78  # EX_CONFIG
EXIT_INTERRUPTED = 130


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="hashbay-agent",
        description="hashbay agent daemon: runs the miner's hashboards, fans and power.",
    )
    parser.add_argument("--version", action="version", version=f"hashbay-agent {__version__}")
    parser.add_argument(
        "--config",
        "-c",
        type=Path,
        metavar="FILE",
        help="TOML config file (default: the packaged simulated rig)",
    )
    parser.add_argument(
        "--check-config", type=Path, metavar="FILE", help="validate FILE and exit (0 = valid)"
    )
    parser.add_argument("--state-dir", metavar="DIR", help="override agent.state_dir")
    parser.add_argument("--runtime-dir", metavar="DIR", help="override agent.runtime_dir")
    parser.add_argument(
        "--live",
        action="store_true",
        help="draw live status in this terminal; logs go to STATE_DIR/agent.log",
    )
    parser.add_argument(
        "--log-format", choices=("auto", "json", "console"), default="auto", help="log format"
    )
    test = parser.add_argument_group("hardware self-test (with the daemon stopped)")
    test.add_argument(
        "--self-test",
        action="store_true",
        help="walk the configured hardware, print what answers, leave it safe; "
        "exit 0 = every check passed, 1 = a check failed",
    )
    test.add_argument("--json", action="store_true", help="the self-test's report as JSON")
    test.add_argument(
        "--no-power",
        action="store_true",
        help="never power a module (its chain is not counted)",
    )
    args = parser.parse_args(argv)
    if (args.json or args.no_power) and not args.self_test:
        parser.error("--json and --no-power go with --self-test")
    return args


def prepare_dir(path: str, key: str) -> None:
    """Create the directory if needed and prove it is writable, or raise OSError with why."""
    directory = Path(path)
    if not directory.is_absolute():
        raise OSError(f"{key} {path}: must be an absolute path")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise OSError(
            f"{key} {path}: not usable ({reason}); create it writable for this user "
            f"or pass --{key.replace('_', '-')}"
        ) from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.check_config is not None:
        return check_config(args.check_config)
    config_path = args.config or default_config_path()
    config = _load_or_report(config_path)
    if config is None:
        return EXIT_CONFIG
    state_dir = _absolute(args.state_dir)
    runtime_dir = _absolute(args.runtime_dir)
    config = config.with_dirs(state_dir, runtime_dir)
    try:
        if not args.self_test:  # a self-test keeps no state
            prepare_dir(config.agent.state_dir, "state_dir")
        prepare_dir(config.agent.runtime_dir, "runtime_dir")
    except OSError as exc:
        print(f"hashbay-agent: {exc}", file=sys.stderr)
        return EXIT_CANTCREAT
    holder = "hashbay-agent --self-test" if args.self_test else "hashbay-agent"
    lock = InstanceLock(config.agent.runtime_dir, holder)
    try:
        lock.acquire()
    except HardwareBusy as exc:
        print(f"hashbay-agent: {exc}", file=sys.stderr)
        return EXIT_TEMPFAIL
    except OSError as exc:
        print(f"hashbay-agent: cannot lock {lock.path}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_CANTCREAT
    try:
        if args.self_test:
            return self_test(config, str(config_path), args)
        return run(config, args)
    finally:
        lock.release()


def _absolute(path: str | None) -> str | None:
    return None if path is None else os.path.abspath(path)


def check_config(path: Path) -> int:
    if _load_or_report(path) is None:
        return EXIT_CONFIG
    print(f"{path}: ok")
    return 0


def _load_or_report(path: Path) -> Config | None:
    """The config, or None after one line on stderr saying what is wrong with it."""
    try:
        return load_config(path)
    except ConfigError as exc:
        message = str(exc)
    except Exception as exc:  # a checker bug must still end in one line, not a traceback
        message = f"{clip(str(path), 200)}: cannot be checked ({type(exc).__name__}); report this"
    print(f"hashbay-agent: config error: {message}", file=sys.stderr)
    return None


def run(config: Config, args: argparse.Namespace) -> int:
    recent = RecentEvents() if args.live else None
    log_stream: TextIO = sys.stderr
    if args.live:
        log_path = Path(config.agent.state_dir) / "agent.log"
        log_stream = log_path.open("a", encoding="utf-8", buffering=1)
    configure_logging(config.agent.log_level, stream=log_stream, fmt=args.log_format, recent=recent)
    log = structlog.get_logger("hashbay.main")
    log.info("starting", version=__version__, name=config.agent.name, pid=os.getpid())
    notifier = SystemdNotifier()
    try:
        return asyncio.run(
            run_agent(
                config,
                notifier=notifier,
                live=sys.stdout if args.live else None,
                recent=recent,
            )
        )
    except HardwareError as exc:
        log.critical("hardware unavailable", error=str(exc))
        print(f"hashbay-agent: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except Exception as exc:
        log.critical("agent crashed", exc_info=True)
        print(f"hashbay-agent: internal error: {exc!r}", file=sys.stderr)
        return EXIT_SOFTWARE
    finally:
        if log_stream is not sys.stderr:
            log_stream.close()


def self_test(config: Config, source: str, args: argparse.Namespace) -> int:
    configure_logging("warning", stream=sys.stderr, fmt=args.log_format)
    on_check = _print_row if not args.json else (lambda check: None)
    if not args.json:
        print(render.header(Report(config.agent.name, source)), flush=True)
    try:
        report = asyncio.run(_self_test(config, source, args, on_check))
    except HardwareError as exc:
        print(f"hashbay-agent: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("hashbay-agent: self-test interrupted; hardware left safe", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(render.as_json(report) if args.json else render.summary(report), flush=True)
    return 0 if report.ok else EXIT_FAILED


async def _self_test(
    config: Config, source: str, args: argparse.Namespace, on_check: Callable[[Check], None]
) -> Report:
    """The walk, cancelled (and so ended in the safe state) by SIGTERM as by Ctrl-C."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await run_self_test(config, source=source, power=not args.no_power, on_check=on_check)


def _print_row(check: Check) -> None:
    print(render.row(check), flush=True)


if __name__ == "__main__":
    sys.exit(main())
