"""Tiny local models and data for the reliability tests (offline)."""

import pytest
from datasets import Dataset

from ceu_rl.tiny_models import save_tiny_model

FORGET = Dataset.from_dict({"question": ["Who wrote Blue Sky?", "Where was Ana born?", "What is Ana's genre?",
                                         "When did Ana start?"],
                            "answer": ["Ana Ruiz wrote Blue Sky.", "Ana was born in Lima.", "Ana writes poetry.",
                                       "Ana started in 1990."]})
RETAIN = Dataset.from_dict({"question": ["Who wrote Red Sea?", "Where was Bo born?"],
                            "answer": ["Bo Chen wrote Red Sea.", "Bo was born in Oslo."]})
PREFERENCES = Dataset.from_dict({"prompt": ["Who wrote Blue Sky?", "Where was Ana born?", "What is Ana's genre?",
                                            "When did Ana start?"],
                                 "chosen": [" Ana Ruiz.", " Lima.", " Poetry.", " In 1990."],
                                 "rejected": [" Bo Chen.", " Oslo.", " Novels.", " In 2001."]})


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory):
    texts = [*FORGET["question"], *FORGET["answer"], *RETAIN["question"], *RETAIN["answer"],
             *PREFERENCES["chosen"], *PREFERENCES["rejected"], "I don't know."]
    return str(save_tiny_model(tmp_path_factory.mktemp("reliability-tiny"), texts * 5, vocab_size=300))
