"""The `modelyard` command: offline tools for platform teams and model owners.

Every sub-command reports bad input as one line per problem on stderr and a non-zero exit code,
never as a traceback: these commands run in CI pipelines where a stack trace helps nobody.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from modelyard import config as operator_config
from modelyard import listing
from modelyard import render as offline
from modelyard import verify as verification
from modelyard.api import crds


def _crds(args: argparse.Namespace) -> int:
    for output in args.output or ["crds"]:
        for path in crds.write(Path(output)):
            print(f"wrote {path}")
    return 0


def _render(args: argparse.Namespace) -> int:
    try:
        settings = operator_config.load(args.config)
    except operator_config.ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    missing = [path for path in args.filename if not Path(path).exists()]
    if missing:
        for path in missing:
            print(f"error: {path}: no such file or directory", file=sys.stderr)
        return 2
    rendered = offline.render(args.filename, settings)
    sys.stdout.write(offline.to_yaml(rendered))
    for note in rendered.notes:
        print(f"note: {note}", file=sys.stderr)
    for problem in rendered.errors:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if rendered.errors else 0


def _missing(paths: list[str]) -> bool:
    """Say which of `paths` do not exist (before anything is read or contacted)."""
    missing = [path for path in paths if not Path(path).exists()]
    for path in missing:
        print(f"error: {path}: no such file or directory", file=sys.stderr)
    return bool(missing)


def _verify(args: argparse.Namespace) -> int:
    if _missing(args.filename):
        return 2
    lines, problems = asyncio.run(verification.verify_files(args.filename))
    for line in lines:
        print(line.text)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems or any(not line.ok for line in lines) else 0


def _models(args: argparse.Namespace) -> int:
    if _missing(args.filename):
        return 2
    listings, problems = asyncio.run(listing.list_registries(args.filename))
    print(listing.as_json(listings) if args.output == "json" else listing.as_text(listings))
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return listing.exit_code(listings, problems)


def _run(args: argparse.Namespace) -> int:
    try:
        operator_config.load(args.config)
    except operator_config.ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.config:
        os.environ[operator_config.CONFIG_ENV] = args.config
    # Imported here: kopf registers handlers on import, which only this command wants.
    from modelyard.handlers.operator import run  # noqa: PLC0415

    run(args.namespace or [], args.liveness, args.verbose)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelyard", description="Serve custom ML models on Kubernetes."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    crds_cmd = commands.add_parser(
        "crds", help="write the CustomResourceDefinitions generated from the API models"
    )
    crds_cmd.add_argument(
        "-o", "--output", action="append", help="directory, repeatable (default: crds)"
    )
    crds_cmd.set_defaults(output=None)
    crds_cmd.set_defaults(func=_crds)

    render_cmd = commands.add_parser(
        "render",
        help="print the Deployments, Services and autoscalers the operator would create",
        description="Offline, like `helm template`: reads Registries, ModelTemplates, "
        "ModelVersions and Models from files and prints the children of every Model as YAML. "
        "Invalid input is reported on stderr, one line each, and the exit code is 1.",
    )
    render_cmd.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        help="a manifest file or a directory of them; repeatable",
    )
    render_cmd.add_argument(
        "--config",
        help="operator configuration file (GPU types, autoscaling); "
        f"default ${operator_config.CONFIG_ENV} or built-in defaults",
    )
    render_cmd.set_defaults(func=_render)

    verify_cmd = commands.add_parser(
        "verify",
        help="check ModelVersions' digests against their registry, as the operator will",
        description="Reads Registry, Secret and ModelVersion manifests and verifies that each "
        "image version's digest exists and its tag points to it, and that each MLflow version "
        "exists and is READY. Prints one line per version; exit code 1 if any fails. "
        "Credentials: a Secret in the files, else "
        "$MODELYARD_REGISTRY_USERNAME/$MODELYARD_REGISTRY_PASSWORD, else the Docker config "
        "(OCI) or $MLFLOW_TRACKING_USERNAME/$MLFLOW_TRACKING_PASSWORD or "
        "$MLFLOW_TRACKING_TOKEN (MLflow).",
    )
    verify_cmd.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        help="a manifest file or a directory of them; repeatable",
    )
    verify_cmd.set_defaults(func=_verify)

    models_cmd = commands.add_parser(
        "models",
        help="list what each Registry in the files holds: image tags, or MLflow models",
        description="For each Registry in the files: for an OCI registry, the tags (with their "
        "digests) of the repositories the ModelVersions and ModelTemplates in the files name; "
        "for an MLflow registry, every registered model with its aliases and versions (status, "
        "run ID, source). Credentials as for `verify`. Exit code 1 if a registry cannot be "
        "listed.",
    )
    models_cmd.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        help="a manifest file or a directory of them; repeatable",
    )
    models_cmd.add_argument(
        "-o", "--output", choices=("text", "json"), default="text", help="output format"
    )
    models_cmd.set_defaults(func=_models)

    run_cmd = commands.add_parser(
        "run",
        help="run the operator against the cluster of the current kubeconfig (or in-cluster)",
    )
    run_cmd.add_argument(
        "-n", "--namespace", action="append", help="serve only this namespace; repeatable"
    )
    run_cmd.add_argument("--config", help="operator configuration file")
    run_cmd.add_argument(
        "--liveness", help="serve kopf's health probe at this URL, e.g. http://0.0.0.0:8080/healthz"
    )
    run_cmd.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    run_cmd.set_defaults(func=_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
