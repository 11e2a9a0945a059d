"""Test settings shared by the whole suite: small thread counts (2-core CI) and hypothesis profiles."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch
from hypothesis import settings

torch.set_num_threads(1)
settings.register_profile("kivla", deadline=None, max_examples=60)
settings.load_profile("kivla")
