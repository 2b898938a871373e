"""Runs every benchmark (or those named on the command line) and prints their figures."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

from hashbay.tools.bench import Figure

BENCHMARKS = [
    "startup",
    "frames",
    "sim",
    "predict",
    "costs",
    "agent",
    "commands",
    "autotune",
    "thermal",
    "api",
    "mining",
    "power",
    "sv2",
    "fans",
    "metrics",
    "fleet",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/run bench", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run: {', '.join(BENCHMARKS)}")
    args = parser.parse_args(argv)
    unknown = set(args.names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    for name in args.names or BENCHMARKS:
        module = importlib.import_module(f"hashbay.tools.bench.{name}")
        run: Callable[[], list[Figure]] = module.run
        print(f"# {name}: {module.__doc__.splitlines()[0] if module.__doc__ else ''}", flush=True)
        for figure in run():
            print(figure.line(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
