"""``python -m local_runner``."""

from local_runner.cli import main

main()
