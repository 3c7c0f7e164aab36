"""DPO vs CE-U-DPO side by side over seeds (`python -m experiments.dpo_compare`)."""
