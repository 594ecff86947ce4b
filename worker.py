"""The worker, from a checkout: ``python worker.py [options]`` (``--help`` lists them).

Its code is :mod:`durable_assistants.worker`, installed with the package (as every folder of
the product is, under ``durable_assistants``); ``durable-assistants worker`` and
``python -m durable_assistants.worker`` run the same."""

from durable_assistants.worker import run_and_leave

if __name__ == "__main__":
    run_and_leave("python worker.py")
