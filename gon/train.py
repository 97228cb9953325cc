"""`python -m gon.train` (or `gon-train`): train one job, or a multirun; see gon.app.train."""

from gon.app.train.cli import cli

if __name__ == "__main__":
    cli()
