"""`python -m cli`: the `quantrac` command (what tests and benches spawn)."""

from cli.main import app

app(prog_name="quantrac")
