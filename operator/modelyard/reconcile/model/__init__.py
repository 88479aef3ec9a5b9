"""One Model, reconciled: read what the indices hold, plan, decide the rollout's step, apply
what differs, observe, write status.

Start at `flow.reconcile_model`: the pass is one sequence there, and each step is a module.

| Module | Holds | Writes to the API? |
|---|---|---|
| `world` | what a pass reads (`ModelWorld`) and reports (`Outcome`) | no |
| `capacity` | a canary's capacity dip: the serving count, the autoscaler's ceiling | no |
| `canary` | where a canary rollout stands, from the stores and the prober's memory | no |
| `status` | the Model's status and conditions from what was observed | no |
| `apply` | children: what differs, replica hand-overs, workers that lost consent | yes |
| `publish` | the status write, Events and log lines | yes |
| `external` | a Model served outside the cluster: its alias Service and its status | yes |
| `flow` | the pass | through the above |
"""

from modelyard.reconcile.model.flow import reconcile_model
from modelyard.reconcile.model.status import model_status
from modelyard.reconcile.model.world import ModelWorld, Outcome, key_of

__all__ = ["ModelWorld", "Outcome", "key_of", "model_status", "reconcile_model"]
