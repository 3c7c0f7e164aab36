"""Experiments over the ceu_rl library: pipelines that train, unlearn, evaluate and plot (not part of the library).

`experiments.main`: the README's main job (`bash run.sh main`); `experiments.gradient_table`: its CE-U vs gradient
ascent table; `experiments.mini_tofu`: the TOFU protocol end to end on a tiny local Llama, over seeds and a
learning-rate grid; `experiments.grpo_compare` and `experiments.dpo_compare`: the GRPO and DPO studies.
"""
