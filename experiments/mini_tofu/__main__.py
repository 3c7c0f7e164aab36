import os

# One line per job, as in `bash run.sh main`: no tqdm bars from the evaluator (set before it is imported; the spawned
# workers inherit the environment). vLLM's import-time warnings: see the package's __init__.
os.environ.setdefault("TQDM_DISABLE", "1")

from .run import main  # noqa: E402

main()
