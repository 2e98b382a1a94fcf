"""`python -m dail` runs the same command as `dail`."""

from .cli import main

main()
