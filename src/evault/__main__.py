"""`python -m evault` runs the command line (used by `evault up` to start its processes)."""

from evault.cli import main

main()
