"""Run the command line as `python -m protect`."""

from protect.cli import app

app(prog_name="protect")
