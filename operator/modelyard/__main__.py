"""`python -m modelyard ...` is the same as the `modelyard` command."""

from modelyard.cli import main

raise SystemExit(main())
