"""`python -m gon.sweep` (or `gon-sweep`): summarise a sweep dir's study; see gon.app.sweep."""

from gon.app.sweeps.cli import cli

if __name__ == "__main__":
    cli()
