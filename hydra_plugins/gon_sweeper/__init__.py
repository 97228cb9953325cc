"""Hydra sweeper `gon_optuna`: the Optuna sweeper with resumable, failure-tolerant studies."""
