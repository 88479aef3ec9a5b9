"""Train the iris model and lay out what each runtime loads (run at image build time).

    python -m modelyard_runtimes.train /opt/models

writes

    iris.joblib                              the model DEEPaaS's `iris` loads in warm()
    mlserver/iris/model-settings.json        MLServer's scikit-learn runtime, unmodified
    mlserver/iris/model.joblib
    mlserver-wrong-shape/iris/...            the same model behind `IrisWrongShape`

MLServer serves every model under the folder it is started with, so the folder picks the
variant; both name their model `iris`, so a client asks the same paths of either.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from modelyard_runtimes import iris

#: The Open Inference Protocol metadata MLServer answers at GET /v2/models/iris: without it
#: MLServer lists no inputs or outputs. scikit-learn's `predict` answers one label per row,
#: which MLServer's numpy codec sends as shape [rows, 1].
INPUTS = [{"name": "features", "datatype": "FP64", "shape": [-1, len(iris.FEATURES)]}]
OUTPUTS = [{"name": "predict", "datatype": "INT64", "shape": [-1, 1]}]
IMPLEMENTATIONS = {
    "mlserver": "mlserver_sklearn.SKLearnModel",
    "mlserver-wrong-shape": "modelyard_runtimes.mlserver_models.IrisWrongShape",
}


def settings(implementation: str) -> dict[str, Any]:
    return {
        "name": "iris",
        "implementation": implementation,
        "parameters": {"uri": "./model.joblib"},
        "inputs": INPUTS,
        "outputs": OUTPUTS,
    }


def main(target: Path) -> None:
    import joblib  # noqa: PLC0415 -- comes with scikit-learn
    from sklearn.datasets import load_iris  # noqa: PLC0415

    model = iris.train()
    data = load_iris()
    accuracy = float(model.score(data.data, data.target))
    if accuracy < 0.9:
        raise SystemExit(f"the iris model scores {accuracy:.3f} on its own data")
    target.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, target / "iris.joblib")
    for folder, implementation in IMPLEMENTATIONS.items():
        repository = target / folder / "iris"
        repository.mkdir(parents=True, exist_ok=True)
        joblib.dump(model, repository / "model.joblib")
        text = json.dumps(settings(implementation), indent=2) + "\n"
        (repository / "model-settings.json").write_text(text)
    print(f"iris: accuracy {accuracy:.3f} on the 150 flowers; models in {target}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
