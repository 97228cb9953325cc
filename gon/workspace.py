"""`python -m gon.workspace` (or `gon-workspace`): a saved W&B workspace; see gon.app.workspace."""

from gon.app.evaluate.workspace import cli

if __name__ == "__main__":
    cli()
