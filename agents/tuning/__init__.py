"""Hyperparameter tuning with Optuna: search spaces as data, trials as ordinary training runs."""
