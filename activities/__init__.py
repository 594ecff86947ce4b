"""All I/O of the worker: the model API (one backend module per API) and tool execution."""
