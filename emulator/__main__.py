import sys

from .server import main

sys.exit(main(prog="python -m emulator"))
