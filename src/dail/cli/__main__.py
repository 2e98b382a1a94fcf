"""`python -m dail.cli` runs the same command as `dail`."""

from . import main

main()
