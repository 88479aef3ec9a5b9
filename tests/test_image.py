"""What the operator image is built from. Docker cannot run on these machines, so the image
itself is built by `make docker-build` elsewhere; this checks what the Dockerfile relies on: the
checkout installs as a package whose `modelyard` command runs, as the non-root user the chart
expects."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def test_dockerfile_runs_modelyard_as_the_charts_non_root_user() -> None:
    assert re.search(r"^USER 10001:10001$", DOCKERFILE, re.M)
    assert 'ENTRYPOINT ["modelyard"]' in DOCKERFILE and 'CMD ["run"]' in DOCKERFILE
    chart = (ROOT / "charts" / "modelyard" / "templates" / "deployment.yaml").read_text()
    assert "runAsUser: 10001" in chart
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE, re.M):
        for path in source.split():
            assert (ROOT / path).exists(), f"the Dockerfile copies {path}, which does not exist"


def test_checkout_builds_the_package_the_image_installs(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("modelyard-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "modelyard = modelyard.cli:main" in archive.read(entry_points).decode()
    for module in (
        "modelyard/handlers/operator.py",
        "modelyard/kube/client.py",
        "modelyard/kube/informer.py",
        "modelyard/py.typed",
    ):
        assert module in names
    assert not [n for n in names if n.startswith("tests/")]
