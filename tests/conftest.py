"""Shared test settings: run wandb offline and keep torch to the two cores this suite gets."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as train.py sets it
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
