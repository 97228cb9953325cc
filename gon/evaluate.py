"""`python -m gon.evaluate` (or `gon-evaluate`): score a sweep's variants; see gon.app.evaluate."""

from gon.app.evaluate.cli import cli

if __name__ == "__main__":
    cli()
