"""A local, deterministic OpenAI Assistants API server: the offline stand-in for the
shut-down hosted API that every test, demo and benchmark of durable-assistants runs against.
It serves the Responses and Conversations APIs too, over the same scripted model."""

from .app import Emulator
from .config import CompatConfig, EmulatorConfig
from .script import Script, ScriptedCall

__all__ = ["CompatConfig", "Emulator", "EmulatorConfig", "Script", "ScriptedCall"]
