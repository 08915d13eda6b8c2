import sys

from pibench.cli import main

sys.exit(main())
