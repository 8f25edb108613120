"""`python -m augforge` runs the command line."""

from augforge.cli import main

raise SystemExit(main())
