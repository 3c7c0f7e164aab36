import os

os.environ.setdefault("TQDM_DISABLE", "1")  # one line per job

from .run import main  # noqa: E402

main()
