"""The operator process: informers and what their events ask of the runner (`informers`, through
the filters of `predicates`, trimmed by `trim`), and the process's life (`operator`: leading,
health, supervision, stopping; `memory`)."""
