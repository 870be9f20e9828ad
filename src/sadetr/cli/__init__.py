"""The command line: `sadetr <command>`, one module per command under `commands/`."""
