"""The iris classifier every runtime of the image serves: four measurements in, a species out."""

from __future__ import annotations

from typing import Any

#: The four inputs, in the order the model takes them (centimetres).
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
#: The species, indexed by the model's class number.
SPECIES = ("setosa", "versicolor", "virginica")
#: A flower of each species from the data set, for examples and smoke tests.
SAMPLES = ((5.1, 3.5, 1.4, 0.2), (6.2, 2.9, 4.3, 1.3), (6.3, 3.3, 6.0, 2.5))


def train() -> Any:
    """A scaled logistic regression fitted on all 150 flowers; deterministic."""
    from sklearn.datasets import load_iris  # noqa: PLC0415 -- heavy; only the build trains
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415
    from sklearn.pipeline import make_pipeline  # noqa: PLC0415
    from sklearn.preprocessing import StandardScaler  # noqa: PLC0415

    data = load_iris()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(data.data, data.target)
    return model
