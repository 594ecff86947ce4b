import sys

from durable_assistants.emulator.server import main

sys.exit(main(prog="python -m durable_assistants.emulator"))
