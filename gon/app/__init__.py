"""The experiment app: configs, datasets, checkpoints, tracking, metrics, train, evaluate,
report and sweeps. It imports the library (gon.core) and the frameworks (Hydra, Optuna, W&B,
torchmetrics, scikit-learn, torchvision); the library never imports it.
"""
