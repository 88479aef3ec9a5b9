"""The naive kopf operator the benchmark compares against: kopf's documented minimal style.

One `on.create` handler that creates a Deployment, default kopf settings, and — as in kopf's
documentation — the Kubernetes API client built inside the handler. This is deliberately not
tuned: it is the reference every kopf user starts from.
"""

import kopf
import kubernetes


@kopf.on.create("modelyard.dev", "v1alpha1", "models")
def create_fn(spec, name, namespace, logger, **kwargs):
    kubernetes.config.load_kube_config()
    api = kubernetes.client.AppsV1Api()
    labels = {"app.kubernetes.io/name": name, "modelyard.dev/model": name}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"modelyard.dev/model": name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "model", "image": "registry.example/model:1"}]},
            },
        },
    }
    kopf.adopt(deployment)
    api.create_namespaced_deployment(namespace=namespace, body=deployment)
    logger.info("Deployment %s created", name)
