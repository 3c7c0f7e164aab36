"""Experiments over the ceu_rl library: pipelines that train, unlearn, evaluate and plot (not part of the library).

`experiments.mini_tofu`: the TOFU protocol end to end on a tiny local Llama, over seeds and a learning-rate grid.
"""
