"""Tools: registered Python functions the model can call. ``@tool`` registers into the
default ``registry``; a worker can also be given a registry of its own."""

from durable_assistants.tools.registry import OnFailure, Tool, ToolContext, ToolPolicy, ToolRegistry, registry, tool

__all__ = ["OnFailure", "Tool", "ToolContext", "ToolPolicy", "ToolRegistry", "registry", "tool"]
