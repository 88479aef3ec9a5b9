"""Does the model answer, and answer in its type's schema? Asked in the background.

Ready pods only say that a health endpoint answers; a model that loaded the wrong weights or
speaks another schema passes that too. A template (or an external Model) may declare a probe —
a sample request — and the Model is READY only while the answer conforms to its type's
response schema (`modelyard.api.contracts`). An external Model has no pods at all: whether its
server answers is the only availability there is.

A probe may take its whole timeout, so it never runs inside a reconcile pass: the pass asks the
`Prober` for the verdict on what it wants asked (a `Target`), the Prober asks in the background,
and when the verdict changes it asks for another pass of that Model. A verdict is for one
target: a rollout, an edited probe or another URL makes it stale, and the Model waits for a
fresh one. Targets are asked again every `probes.intervalSeconds` (`retrySeconds` while
failing); a verdict that did not change costs no pass and no write.
"""

from modelyard.reconcile.conformance.asking import Verdict, ask
from modelyard.reconcile.conformance.prober import Prober
from modelyard.reconcile.conformance.targets import (
    Target,
    external_target,
    of_template,
    pod_target,
    service_target,
)

__all__ = [
    "Prober",
    "Target",
    "Verdict",
    "ask",
    "external_target",
    "of_template",
    "pod_target",
    "service_target",
]
