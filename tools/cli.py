"""`hashbay`: the technician's command line. It talks to a running agent, never to hardware."""

from __future__ import annotations

import argparse
import sys

from hashbay import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hashbay", description="Technician CLI for the hashbay agent on this controller."
    )
    parser.add_argument("--version", action="version", version=f"hashbay {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
