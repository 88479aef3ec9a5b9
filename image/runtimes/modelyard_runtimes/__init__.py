"""modelyard's models for the real runtimes image.

Everything is trained at image build time (`python -m modelyard_runtimes.train /opt/models`) from
scikit-learn's bundled iris data: nothing is downloaded, at build time or at run time.

- `deepaas_iris`: a DEEPaaS V2 model (entry point `iris` of `deepaas.v2.model`).
- `mlserver_models`: an MLServer runtime whose answers have one row more than the batch.
- `train`: writes the model files and MLServer's model repositories.
"""

#: Where the image keeps its trained models.
MODELS = "/opt/models"
