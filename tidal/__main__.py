"""`python -m tidal` runs the command line."""

from tidal.cli import main

raise SystemExit(main())
