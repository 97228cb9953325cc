"""DVC `fetch` stage entry point: `python -m pipelines.fetch <dataset>` (see gon.app.data.cli)."""

from gon.app.data.cli import cli

if __name__ == "__main__":
    cli()
