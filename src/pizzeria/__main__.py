"""`python -m pizzeria` is the `pizzeria` command."""

from pizzeria.cli import main

main()
