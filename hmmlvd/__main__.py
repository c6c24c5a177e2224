"""``python -m hmmlvd ...``: the same as the ``hmmlvd`` console script."""
from .cli import main

raise SystemExit(main())
