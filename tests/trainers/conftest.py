"""Fixtures for trainer tests: a tiny Llama saved locally (offline) and a small preference dataset."""

import pytest
from datasets import Dataset

from ceu_rl.tiny_models import save_tiny_model

PROMPTS = ["What is the capital of France?", "Name a colour of the sky.", "How many legs has a cat?",
           "What do bees make?", "Which animal barks?", "What is two plus two?"]
CHOSEN = [" Paris is the capital.", " The sky is blue.", " A cat has four legs.", " Bees make honey.",
          " A dog barks.", " Two plus two is four."]
REJECTED = [" Rome, I think.", " Green, surely.", " Seven legs.", " Bees make milk.", " A fish barks loudly.",
            " Five."]


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory):
    texts = PROMPTS + CHOSEN + REJECTED
    return str(save_tiny_model(tmp_path_factory.mktemp("tiny-llama"), texts * 4, vocab_size=320))


@pytest.fixture
def preference_dataset():
    return Dataset.from_dict({"prompt": PROMPTS, "chosen": CHOSEN, "rejected": REJECTED})


@pytest.fixture
def conversational_preference_dataset():
    return Dataset.from_dict({
        "prompt": [[{"role": "user", "content": p}] for p in PROMPTS],
        "chosen": [[{"role": "assistant", "content": c}] for c in CHOSEN],
        "rejected": [[{"role": "assistant", "content": r}] for r in REJECTED],
    })
