"""``python -m cirlib``: the same entry point as the ``cirlib`` console script."""

from cirlib.cli import main

raise SystemExit(main())
