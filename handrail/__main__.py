"""``python -m handrail`` is the same as the ``handrail`` console script."""

from handrail.cli import main

raise SystemExit(main())
