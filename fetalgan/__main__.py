import sys

from fetalgan.cli import main

sys.exit(main())
