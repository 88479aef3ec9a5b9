"""The operator's passes and what schedules them.

`queue` and `backoff` are the generic work queue; `wakes` (over `indices`) says which keys a
change concerns; `runner` holds one queue per kind and runs each kind's pass: `model/` (a
package, one module per step), `template`, `registry`, `version`. The prober
(`conformance/`) asks model servers in the background; `rollout` decides a canary's next step,
purely; `consent` finds workers reading a Secret that no longer consents; `legacy` releases
kopf's old finalizer.
"""
