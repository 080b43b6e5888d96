"""The command line: `quantrac <command>`, one module per command group (cli/main.py assembles them)."""
