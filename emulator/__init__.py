"""A local, deterministic OpenAI Assistants API server: the offline stand-in for the
shut-down hosted API that every test, demo and benchmark of durable-assistants runs against.
It serves the Responses and Conversations APIs too, over the same scripted model."""

from durable_assistants.emulator.app import Emulator
from durable_assistants.emulator.config import CompatConfig, EmulatorConfig
from durable_assistants.emulator.script import Script, ScriptedCall

__all__ = ["CompatConfig", "Emulator", "EmulatorConfig", "Script", "ScriptedCall"]
