"""The same job as modelyard's, written the way kopf's documentation shows: for each new Model a
Deployment, a Service and an HorizontalPodAutoscaler, and a status.

One `on.create` handler with the official client (built once, not per call), kopf's defaults
otherwise: it persists its progress and diff-base in annotations, and the handler's return value
becomes the Model's status. What it does not do — validate against a template, verify versions,
follow pods, keep children in shape — is modelyard's extra work, not counted against it here.
"""

import kopf
import kubernetes

kubernetes.config.load_kube_config()
APPS = kubernetes.client.AppsV1Api()
CORE = kubernetes.client.CoreV1Api()
AUTOSCALING = kubernetes.client.AutoscalingV2Api()


@kopf.on.create("modelyard.dev", "v1alpha1", "models")
def create_fn(spec, name, namespace, logger, **kwargs):
    labels = {"app.kubernetes.io/name": name, "modelyard.dev/model": name}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "selector": {"matchLabels": {"modelyard.dev/model": name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "model", "image": "registry.example/model:1"}]},
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "selector": {"modelyard.dev/model": name},
            "ports": [{"name": "http", "port": 8080, "targetPort": 8080}],
        },
    }
    autoscaler = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": 1,
            "maxReplicas": 3,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": "modelyard_inflight_requests"},
                        "target": {"type": "AverageValue", "averageValue": "8"},
                    },
                }
            ],
        },
    }
    for child in (deployment, service, autoscaler):
        kopf.adopt(child)
    APPS.create_namespaced_deployment(namespace=namespace, body=deployment)
    CORE.create_namespaced_service(namespace=namespace, body=service)
    AUTOSCALING.create_namespaced_horizontal_pod_autoscaler(namespace=namespace, body=autoscaler)
    logger.info("children of %s created", name)
    return {"state": "DEPLOYING"}
