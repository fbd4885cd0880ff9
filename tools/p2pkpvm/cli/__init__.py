"""The command line: `python -m p2pkpvm SUBCOMMAND` (make targets call it)."""
