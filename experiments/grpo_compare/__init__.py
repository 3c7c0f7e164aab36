"""GRPO vs the CE-U-GRPO variants on tiny verifiable-reward tasks (`python -m experiments.grpo_compare`).

`tasks`: the tasks and their reward; `run`: the resumable sweep; `report`: aggregation, tables and the plot.
"""
