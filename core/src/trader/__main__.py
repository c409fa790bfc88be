"""``python -m trader`` runs the ``trader`` command."""

from trader.cli.main import main

main()
