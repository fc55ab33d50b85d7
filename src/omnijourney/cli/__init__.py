"""The ``omnijourney`` command line: one module per audience (journeys for marketers,
engine, adapters, ops), each adding its subcommands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from omnijourney import __version__
from omnijourney.cli import adapters, engine, journeys, ops


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="omnijourney",
                                description="Omnichannel customer journeys on Kafka.")
    p.add_argument("--version", action="version", version=f"omnijourney {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    for audience in (journeys, engine, adapters, ops):
        audience.add_parsers(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BrokenPipeError:
        return 0
    except (OSError, ValueError) as exc:
        print(f"omnijourney {args.command}: {exc}", file=sys.stderr)
        return 2
