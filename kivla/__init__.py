"""kivla: train vision-language-action policies with the Knowledge Insulation recipe of pi0.5.

Packages follow the data flow (see docs/architecture.md):
  tokenizers/  discrete action targets (FAST, binning, wavelet, VQ)
  data/        built-in world, LeRobot v3 datasets, normalization, mixtures
  model/       backbones, action expert, attention masks, KIPolicy
  train/       training loop, recipes, checkpoints, distributed launch
  eval/        rollouts, language retention, gradient studies
  serve/       policy server (openpi's protocol) and clients
"""

__version__ = "0.1.0"
