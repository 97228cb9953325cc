"""`python -m gon.sweep` (or `gon-sweep`): summarise a sweep dir's study (gon.app.sweeps.cli)."""

from gon.app.sweeps.cli import cli

if __name__ == "__main__":
    cli()
