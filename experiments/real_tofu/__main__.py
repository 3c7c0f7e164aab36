import os

os.environ.setdefault("TQDM_DISABLE", "1")

from .run import main  # noqa: E402

main()
