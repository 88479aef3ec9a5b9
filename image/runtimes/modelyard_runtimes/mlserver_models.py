"""An MLServer runtime that breaks the Open Inference Protocol's batch rule on purpose.

`IrisWrongShape` is MLServer's own scikit-learn runtime, except that every answer has one row
more than the request's batch (the first row, repeated): the declared datatype and the output's
name are right, its shape is not. The model repository `/opt/models/mlserver-wrong-shape`
serves it as `iris`.
"""

from __future__ import annotations

import numpy as np
from mlserver.codecs import NumpyCodec, NumpyRequestCodec
from mlserver.types import InferenceRequest, InferenceResponse, RequestOutput
from mlserver_sklearn import SKLearnModel


class IrisWrongShape(SKLearnModel):  # type: ignore[misc]
    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        features = self.decode_request(payload, default_codec=NumpyRequestCodec)
        labels = self._model.predict(features)
        labels = np.concatenate([labels, labels[:1]])
        output = self.encode(labels, RequestOutput(name="predict"), default_codec=NumpyCodec)
        return InferenceResponse(model_name=self.name, model_version=self.version, outputs=[output])
