"""Pipeline stage entry points (run with `python -m pipelines.<stage>`; called by dvc.yaml)."""
