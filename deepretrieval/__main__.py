"""`python -m deepretrieval COMMAND ...` is the same as the `deepretrieval` console script."""
import sys

from deepretrieval.cli import main

sys.exit(main())
