"""The `modelyard` command: offline tools for platform teams and model owners.

Every sub-command reports bad input as one line per problem on stderr and a non-zero exit code,
never as a traceback: these commands run in CI pipelines where a stack trace helps nobody.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from modelyard.api import crds


def _crds(args: argparse.Namespace) -> int:
    for path in crds.write(Path(args.output)):
        print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelyard", description="Serve custom ML models on Kubernetes."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    crds_cmd = commands.add_parser(
        "crds", help="write the CustomResourceDefinitions generated from the API models"
    )
    crds_cmd.add_argument("-o", "--output", default="crds", help="directory (default: crds)")
    crds_cmd.set_defaults(func=_crds)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
