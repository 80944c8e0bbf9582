"""``python -m fastdl ...``: the ``fastdl`` command (``fastdl.cli``)."""
import sys

from fastdl.cli import main

if __name__ == "__main__":
    sys.exit(main())
