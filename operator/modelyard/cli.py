"""The `modelyard` command: offline tools for platform teams and model owners.

Every sub-command reports bad input as one line per problem on stderr and a non-zero exit code,
never as a traceback: these commands run in CI pipelines where a stack trace helps nobody.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from modelyard import config as operator_config
from modelyard import listing
from modelyard import render as offline
from modelyard import verify as verification
from modelyard.api import contracts, crds
from modelyard.api.v1alpha1 import API_VERSION, Model, ModelTemplate, ModelType, parse


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
    lines, problems = asyncio.run(verification.verify_files(args.filename, args.key))
    for line in lines:
        print(line.text)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems or any(not line.ok for line in lines) else 0


def _verify_weights(args: argparse.Namespace) -> int:
    from modelyard import weights  # noqa: PLC0415 -- the workers' init step only

    return weights.main(Path(args.path), os.environ.get(weights.KEYS_VARIABLE, ""))


def _fetch_mlflow_weights(args: argparse.Namespace) -> int:
    from modelyard import weights  # noqa: PLC0415 -- the workers' init step only

    return weights.fetch_main(Path(args.path), dict(os.environ))


def _warm_weights(args: argparse.Namespace) -> int:
    from modelyard import weights  # noqa: PLC0415 -- the warming pods' only step

    return weights.present(Path(args.path))


def _models(args: argparse.Namespace) -> int:
    if _missing(args.filename):
        return 2
    listings, problems = asyncio.run(listing.list_registries(args.filename))
    print(listing.as_json(listings) if args.output == "json" else listing.as_text(listings))
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return listing.exit_code(listings, problems)


MODEL_TYPES = [t.value for t in ModelType]


def _model_type(name: str) -> str | None:
    wanted = name.upper().replace("-", "_")
    if wanted not in MODEL_TYPES:
        print(
            f"error: unknown model type {name!r}; the types are {', '.join(MODEL_TYPES)}",
            file=sys.stderr,
        )
        return None
    return wanted


def _schemas(args: argparse.Namespace) -> int:
    types = [_model_type(args.type)] if args.type else MODEL_TYPES
    if None in types:
        return 2
    if args.output == "json":
        schemas = {t: contracts.json_schemas(str(t)) for t in types}
        print(json.dumps(schemas[str(args.type and types[0])] if args.type else schemas, indent=2))
    else:
        print("\n\n".join("\n".join(contracts.describe(str(t))) for t in types))
    return 0


def _type_from_files(paths: list[str], model_name: str | None) -> tuple[str | None, str]:
    """The model type the manifests give a request: a Model's (external, or its template's
    from the same files), or the only template's. Second: what it was read from, or why not."""
    errors: list[str] = []
    documents = offline.load_documents(paths, errors)
    models: list[Model] = []
    templates: dict[tuple[str, str], ModelTemplate] = {}
    for document in documents:
        if document.body.get("apiVersion") != API_VERSION:
            continue
        try:
            resource = parse(document.body)
        except ValueError as error:
            errors.append(f"{document.label}: {error}")
            continue
        namespace = resource.metadata.namespace or "default"
        if isinstance(resource, Model):
            models.append(resource)
        elif isinstance(resource, ModelTemplate):
            templates[(namespace, resource.metadata.name)] = resource
    if errors:
        return None, "; ".join(errors)
    if model_name:
        models = [m for m in models if m.metadata.name == model_name]
        if not models:
            return None, f"no Model {model_name} in the files"
    if len(models) > 1:
        names = ", ".join(m.metadata.name for m in models)
        return None, f"the files hold several Models ({names}): choose one with --model"
    if models:
        model = models[0]
        if model.spec.external is not None:
            return model.spec.external.model_type.value, f"Model {model.metadata.name}"
        template = templates.get((model.metadata.namespace or "default", model.spec.template or ""))
        if template is None:
            return None, (
                f"Model {model.metadata.name} is made from ModelTemplate {model.spec.template}, "
                "which is not in the files; add it with another -f"
            )
        return template.spec.model_type.value, f"Model {model.metadata.name}"
    if len(templates) == 1:
        template = next(iter(templates.values()))
        return template.spec.model_type.value, f"ModelTemplate {template.metadata.name}"
    return None, "the files hold no Model, and not exactly one ModelTemplate"


def _read_request(path: str) -> tuple[Any, str | None]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        return None, f"cannot read: {error}"
    try:
        return json.loads(text), None
    except json.JSONDecodeError as error:
        return None, f"not JSON: {error}"


def _validate_request(args: argparse.Namespace) -> int:
    given = list(args.arguments)
    if args.filename:
        if len(given) != 1:
            print("error: with -f, give only the request file", file=sys.stderr)
            return 2
        if _missing([*args.filename, *(p for p in given if p != "-")]):
            return 2
        model_type, source = _type_from_files(args.filename, args.model)
        if model_type is None:
            print(f"error: {source}", file=sys.stderr)
            return 2
        request_path = given[0]
    else:
        if len(given) != 2:
            print(
                "error: give a model type and a request file, or -f and a request file",
                file=sys.stderr,
            )
            return 2
        model_type, request_path = _model_type(given[0]), given[1]
        if model_type is None:
            return 2
        source = model_type
        if _missing([request_path] if request_path != "-" else []):
            return 2
    request, unreadable = _read_request(request_path)
    if unreadable is not None:
        print(f"error: {request_path}: {unreadable}", file=sys.stderr)
        return 1
    found = contracts.check_request(model_type, request)
    for problem in found:
        print(f"error: {request_path}: {problem}", file=sys.stderr)
    if found:
        print(f"{request_path}: not a valid {model_type} request ({source})", file=sys.stderr)
        return 1
    print(f"{request_path}: a valid {model_type} request ({source})")
    return 0


def _run(args: argparse.Namespace) -> int:
    try:
        operator_config.load(args.config)
    except operator_config.ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.config:
        os.environ[operator_config.CONFIG_ENV] = args.config
    # Imported here: the other commands need none of the operator's machinery.
    from modelyard.handlers.operator import Options, run  # noqa: PLC0415

    options = Options(
        namespaces=args.namespace or [],
        liveness=args.liveness,
        leader_elect=args.leader_elect,
        leader_elect_namespace=args.leader_elect_namespace,
    )
    run(options, args.verbose)
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
        help="check ModelVersions' digests (and signatures) against their registry, as the "
        "operator will",
        description="Reads Registry, Secret and ModelVersion manifests and verifies that each "
        "image version's digest exists and its tag points to it, and that each MLflow version "
        "exists and is READY. Prints one line per version; exit code 1 if any fails. "
        "Credentials: a Secret in the files, else "
        "$MODELYARD_REGISTRY_USERNAME/$MODELYARD_REGISTRY_PASSWORD, else the Docker config "
        "(OCI) or $MLFLOW_TRACKING_USERNAME/$MLFLOW_TRACKING_PASSWORD or "
        "$MLFLOW_TRACKING_TOKEN (MLflow). A Registry with spec.signatures has each image's "
        "cosign signature checked too (a template's image as well), with the public keys of its "
        "Secrets in the files; the line names the key that signed it.",
    )
    verify_cmd.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        help="a manifest file or a directory of them; repeatable",
    )
    verify_cmd.add_argument(
        "--key",
        action="append",
        metavar="FILE",
        help="a PEM public key (cosign.pub) every image must be signed by, in place of the "
        "Registries' policies; repeatable (any one key is enough)",
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

    schemas_cmd = commands.add_parser(
        "schemas",
        help="show the request and response schemas of each model type",
        description="The request a model of each type is sent and the response it must "
        "answer, field by field (text), or as JSON Schema (--output json). Types: "
        + ", ".join(MODEL_TYPES)
        + ".",
    )
    schemas_cmd.add_argument("type", nargs="?", help="one model type, e.g. RERANKING")
    schemas_cmd.add_argument(
        "-o", "--output", choices=("text", "json"), default="text", help="output format"
    )
    schemas_cmd.set_defaults(func=_schemas)

    weights_cmd = commands.add_parser(
        "verify-weights",
        help="a worker's init step: do the mounted weights match their signed manifest?",
        description="Checks the files under PATH against PATH/model.sig (an OpenSSF "
        "model-signing signature) with the PEM public keys in $MODELYARD_WEIGHTS_PUBLIC_KEYS; "
        "exit code 3, and the reason in the termination message, when they do not (2: the "
        "check could not run).",
    )
    weights_cmd.add_argument("path", help="the directory the weights are mounted at")
    weights_cmd.set_defaults(func=_verify_weights)

    fetch_cmd = commands.add_parser(
        "fetch-mlflow-weights",
        help="a worker's init step: fetch an MLflow version's pinned files into PATH, checked",
        description="Fetches the files listed in $MODELYARD_PINNED_FILES from the tracking "
        "server's proxied artifacts ($MLFLOW_TRACKING_URI, $MODELYARD_MLFLOW_ARTIFACTS, with "
        "MLflow's credential variables) into PATH, each checked against its pinned SHA-256; "
        "exit code 3, and the reason in the termination message, when one differs or is gone.",
    )
    fetch_cmd.add_argument("path", help="the directory the runtime reads the files from")
    fetch_cmd.set_defaults(func=_fetch_mlflow_weights)

    warm_cmd = commands.add_parser(
        "warm-weights",
        help="a warming pod's step: say what the node mounted at PATH (the pull is the point)",
        description="Lists the files of the weights the kubelet pulled and mounted at PATH "
        "before a rollout's workers start; exit code 3 when there are none.",
    )
    warm_cmd.add_argument("path", help="the directory the weights are mounted at")
    warm_cmd.set_defaults(func=_warm_weights)

    validate_cmd = commands.add_parser(
        "validate-request",
        help="check a request against its model type's schema, offline, before sending it",
        description="`modelyard validate-request TYPE request.json`, or `-f model.yaml "
        "request.json` to take the type from a Model (external, or with its ModelTemplate in "
        "the files) or a ModelTemplate. Names each wrong field on stderr; exit code 1 when "
        "the request is invalid, 2 when the input cannot be read. `-` reads stdin.",
    )
    validate_cmd.add_argument(
        "arguments", nargs="+", metavar="[TYPE] REQUEST", help="model type and request file"
    )
    validate_cmd.add_argument(
        "-f",
        "--filename",
        action="append",
        help="manifests to take the model type from (files or directories); repeatable",
    )
    validate_cmd.add_argument("--model", help="the Model to take the type from, when several")
    validate_cmd.set_defaults(func=_validate_request)

    run_cmd = commands.add_parser(
        "run",
        help="run the operator against the cluster of the current kubeconfig (or in-cluster)",
    )
    run_cmd.add_argument(
        "-n", "--namespace", action="append", help="serve only this namespace; repeatable"
    )
    run_cmd.add_argument("--config", help="operator configuration file")
    run_cmd.add_argument(
        "--liveness",
        help="serve the health probe at this URL, e.g. http://0.0.0.0:8080/healthz "
        "(and /readyz on the same port: ready once the initial lists are in)",
    )
    run_cmd.add_argument(
        "--leader-elect",
        action="store_true",
        help="run as one of several replicas: only the holder of the Lease modelyard-leader "
        "reconciles; the others stand by with their watches warm and take over when it goes",
    )
    run_cmd.add_argument(
        "--leader-elect-namespace",
        help="namespace of the Lease (default: $POD_NAMESPACE, or the pod's own namespace)",
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
