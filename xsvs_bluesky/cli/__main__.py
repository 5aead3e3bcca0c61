"""Allow ``python -m xsvs_bluesky.cli``."""

from xsvs_bluesky.cli import main

raise SystemExit(main())
