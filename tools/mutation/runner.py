"""Runs mutants against the tests that exercise their module, never in the working tree.

Each worker owns a copy of the tree in a temporary directory; a mutant is written into a
copy, and a forked child (pytest and the libraries already imported, so a mutant costs
its tests and little else) runs the module's tests there with `-x`, in its own process
group so a timeout kills whatever the tests started. The working tree is only read: a
run stopped halfway, even by SIGKILL, leaves nothing mutated behind.

A module's tests first run once unmutated: they must pass, and their time sets each
mutant's timeout (an infinite loop is caught, not waited for).
"""

from __future__ import annotations

import compileall
import contextlib
import enum
import importlib
import os
import shutil
import signal
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hashbay.tools.mutation.mutants import Mutant

_COPIED = (
    *("agent", "drivers", "tools", "hashbay", "tests", "systemd"),
    *("README.md", "pyproject.toml"),
)
_NOT_COPIED = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", ".pytest_cache")
_PYTEST_ARGS = ("-x", "-q", "--no-header", "--tb=line", "-p", "no:cacheprovider")
_POLL_S = 0.02


class Outcome(enum.StrEnum):
    KILLED = "killed"
    TIMED_OUT = "timed out"
    SURVIVED = "survived"
    EQUIVALENT = "equivalent"


@dataclass(frozen=True)
class Target:
    """A module under mutation and the tests that exercise it, fastest first."""

    module: str
    tests: tuple[str, ...]
    min_score: float = 90.0


@dataclass(frozen=True)
class Equivalent:
    """A surviving mutant that cannot change behaviour, and why."""

    module: str
    scope: str
    code: str
    col: int
    mutation: str
    reason: str
    occurrence: int = 0

    @property
    def key(self) -> tuple[str, str, str, int, str, int]:
        return (self.module, self.scope, self.code, self.col, self.mutation, self.occurrence)


def load_targets(path: Path) -> list[Target]:
    data = tomllib.loads(path.read_text())
    default = float(data.get("min_score", 90.0))
    return [
        Target(t["module"], tuple(t["tests"]), float(t.get("min_score", default)))
        for t in data["target"]
    ]


def load_equivalents(path: Path) -> list[Equivalent]:
    data = tomllib.loads(path.read_text())
    found = []
    for entry in data.get("equivalent", []):
        if not str(entry.get("reason", "")).strip():
            raise ValueError(f"{path}: equivalent mutant {entry} has no reason")
        found.append(
            Equivalent(
                module=entry["module"],
                scope=entry.get("scope", ""),
                code=entry["code"],
                col=entry["col"],
                mutation=entry["mutation"],
                reason=entry["reason"],
                occurrence=entry.get("occurrence", 0),
            )
        )
    return found


@dataclass
class ModuleResult:
    target: Target
    outcomes: list[tuple[Mutant, Outcome]] = field(default_factory=list)
    baseline_s: float = 0.0

    def count(self, outcome: Outcome) -> int:
        return sum(1 for _, o in self.outcomes if o is outcome)

    @property
    def score(self) -> float:
        """Caught mutants (killed or timed out) per 100 that could be caught."""
        counted = len(self.outcomes) - self.count(Outcome.EQUIVALENT)
        caught = self.count(Outcome.KILLED) + self.count(Outcome.TIMED_OUT)
        return 100.0 if counted == 0 else 100.0 * caught / counted

    @property
    def survivors(self) -> list[Mutant]:
        return [m for m, o in self.outcomes if o is Outcome.SURVIVED]


class BaselineFailed(RuntimeError):
    """A module's tests fail without any mutant: mutation results would mean nothing."""


@dataclass
class _Task:
    target: Target
    mutant: Mutant | None  # None: the unmutated baseline
    timeout_s: float


@dataclass
class _Running:
    task: _Task
    pid: int
    started: float


class _Workspace:
    """One worker's copy of the tree."""

    def __init__(
        self, source_root: Path, parent: Path, index: int, sources: Mapping[str, bytes]
    ) -> None:
        self.root = parent / f"tree-{index}"
        self.root.mkdir()
        for name in _COPIED:
            src = source_root / name
            if src.is_dir() and not src.is_symlink():
                shutil.copytree(src, self.root / name, symlinks=True, ignore=_NOT_COPIED)
            elif src.exists() or src.is_symlink():
                shutil.copy2(src, self.root / name, follow_symlinks=False)
        for module, data in sources.items():
            self._write(module, data)
        for folder in ("agent", "drivers", "tools", "tests"):
            compileall.compile_dir(self.root / folder, quiet=1)
        self.log = parent / f"tree-{index}.log"
        self._mutated: tuple[str, bytes] | None = None

    def write_mutant(self, mutant: Mutant, original: bytes) -> None:
        self._write(mutant.module, mutant.apply(original))
        self._mutated = (mutant.module, original)

    def restore(self) -> None:
        if self._mutated is not None:
            module, original = self._mutated
            self._write(module, original)
            self._mutated = None

    def _write(self, module: str, data: bytes) -> None:
        path = self.root / module
        for stale in (path.parent / "__pycache__").glob(f"{path.stem}.*.pyc"):
            stale.unlink()
        path.write_bytes(data)


def _run_tests_in_child(root: Path, tests: Sequence[str], log: Path) -> int:
    """In the forked child: import the copy's code (never the caller's) and run pytest."""
    os.setpgid(0, 0)
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.chdir(root)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p
    )
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    sys.dont_write_bytecode = True
    for name in list(sys.modules):
        if name.split(".")[0] in {"hashbay", "tests"}:
            del sys.modules[name]
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    import hypothesis
    import pytest

    # Same examples every run, and no deadline: a busy machine must not kill a mutant.
    hypothesis.settings.register_profile("mutation", database=None, derandomize=True, deadline=None)
    hypothesis.settings.load_profile("mutation")
    return int(pytest.main([*_PYTEST_ARGS, *tests]))


class Runner:
    """Runs tasks on `jobs` workspaces at once."""

    def __init__(self, source_root: Path, jobs: int, sources: Mapping[str, bytes]) -> None:
        """`sources`: each module as its mutants were made from (edits to the working
        tree during a run change nothing)."""
        self.source_root = source_root
        self.jobs = max(1, jobs)
        self.sources = dict(sources)

    def run(
        self,
        plan: Sequence[tuple[Target, Sequence[Mutant]]],
        progress: Callable[[Target, Mutant, Outcome], None] | None = None,
    ) -> list[ModuleResult]:
        import hypothesis  # noqa: F401 - imported once here, inherited by every child
        import pytest  # noqa: F401

        results = {target.module: ModuleResult(target) for target, _ in plan}
        with tempfile.TemporaryDirectory(prefix="hashbay-mutate-") as parent:
            spaces = [
                _Workspace(self.source_root, Path(parent), i, self.sources)
                for i in range(min(self.jobs, max(1, sum(len(m) for _, m in plan))))
            ]
            baselines = [_Task(target, None, 900.0) for target, _ in plan]
            for task, elapsed, outcome in self._execute(spaces, baselines):
                if outcome is not Outcome.SURVIVED:
                    raise BaselineFailed(
                        f"{task.target.module}: its tests fail without a mutant "
                        f"({', '.join(task.target.tests)}); fix them first"
                    )
                results[task.target.module].baseline_s = elapsed
            tasks = [
                _Task(target, mutant, 3 * results[target.module].baseline_s + 10)
                for target, mutants in plan
                for mutant in mutants
            ]
            for task, _, outcome in self._execute(spaces, tasks):
                assert task.mutant is not None
                results[task.target.module].outcomes.append((task.mutant, outcome))
                if progress is not None:
                    progress(task.target, task.mutant, outcome)
        for result in results.values():
            result.outcomes.sort(key=lambda item: (item[0].line, item[0].col, item[0].mutation))
        return [results[target.module] for target, _ in plan]

    def _execute(
        self, spaces: Sequence[_Workspace], tasks: Iterable[_Task]
    ) -> Iterable[tuple[_Task, float, Outcome]]:
        pending = list(tasks)
        pending.reverse()
        running: dict[int, _Running] = {}
        try:
            while pending or running:
                for index, space in enumerate(spaces):
                    if index not in running and pending:
                        task = pending.pop()
                        running[index] = self._start(space, task)
                time.sleep(_POLL_S)
                for index, job in list(running.items()):
                    outcome = _poll(job)
                    if outcome is not None:
                        del running[index]
                        spaces[index].restore()
                        yield job.task, time.monotonic() - job.started, outcome
        finally:
            for job in running.values():
                _kill(job.pid)
            for space in spaces:
                space.restore()

    def _start(self, space: _Workspace, task: _Task) -> _Running:
        if task.mutant is not None:
            space.write_mutant(task.mutant, self.sources[task.mutant.module])
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 70
            try:
                code = _run_tests_in_child(space.root, task.target.tests, space.log)
            finally:
                os._exit(code)
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)
        return _Running(task, pid, time.monotonic())


def _poll(job: _Running) -> Outcome | None:
    done, status = os.waitpid(job.pid, os.WNOHANG)
    if done == 0:
        if time.monotonic() - job.started < job.task.timeout_s:
            return None
        _kill(job.pid)
        return Outcome.TIMED_OUT
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(job.pid, signal.SIGKILL)  # whatever the tests left running
    code = os.waitstatus_to_exitcode(status)
    if code == 0:
        return Outcome.SURVIVED
    if code == 5:  # pytest: no tests collected, so the map names no test here
        raise RuntimeError(f"{job.task.target.module}: no tests in {job.task.target.tests}")
    return Outcome.KILLED


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
