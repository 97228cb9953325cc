"""`python -m gon.claims`: the claims table (the DVC `claims` stage); see gon.app.claims_run."""

from gon.app.claims.cli import cli

if __name__ == "__main__":
    cli()
