"""CLI subcommands; each module exposes `register(subparsers)` (see `sadetr.cli.main`)."""
