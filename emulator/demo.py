"""A guided tour of the emulator with the real `openai` SDK: ``python -m durable_assistants.emulator.demo``.

Starts an emulator on a free loopback port, creates an assistant with two function tools,
asks a plain question, streams the run, answers the tool calls from local Python functions
and prints the model's final answer. With ``--once`` it exits when done; otherwise it keeps
the emulator up for you to explore until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable
from typing import Any

from openai import AssistantEventHandler, OpenAI
from openai.types.beta.threads.run_submit_tool_outputs_params import ToolOutput

from durable_assistants.emulator.server import EmulatorProcess

warnings.filterwarnings("ignore", category=DeprecationWarning)

LOCAL_TOOLS: dict[str, Callable[..., Any]] = {
    "get_weather": lambda city: {"city": city, "forecast": "sunny", "celsius": 21},
    "convert_temperature": lambda celsius: {"fahrenheit": celsius * 9 / 5 + 32},
}
TOOL_SCHEMAS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Today's forecast for a city.",
            "strict": True,
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "examples": ["Lisbon"]}},
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "convert_temperature",
            "description": "Celsius to Fahrenheit.",
            "strict": True,
            "parameters": {
                "type": "object",
                "properties": {"celsius": {"type": "number", "examples": [21]}},
                "required": ["celsius"],
                "additionalProperties": False,
            },
        },
    },
]


class Printer(AssistantEventHandler):
    def on_tool_call_created(self, tool_call: Any) -> None:
        print(f"  model calls {tool_call.function.name}")

    def on_text_delta(self, delta: Any, snapshot: Any) -> None:
        print(delta.value, end="", flush=True)


def tour(base_url: str) -> None:
    client = OpenAI(base_url=base_url, api_key="sk-local")
    assistant = client.beta.assistants.create(model="gpt-4o", name="weather-demo", tools=TOOL_SCHEMAS)  # type: ignore[arg-type]
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "What's the weather in Lisbon, in Fahrenheit?"}])
    print(f"assistant {assistant.id}, thread {thread.id}")
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id, event_handler=Printer()) as stream:
        stream.until_done()
        run = stream.get_final_run()
    while run.status == "requires_action":
        outputs: list[ToolOutput] = []
        for call in run.required_action.submit_tool_outputs.tool_calls:  # type: ignore[union-attr]
            result = LOCAL_TOOLS[call.function.name](**json.loads(call.function.arguments))
            print(f"  {call.function.name}({call.function.arguments}) -> {json.dumps(result)}")
            outputs.append({"tool_call_id": call.id, "output": json.dumps(result)})
        print("assistant: ", end="")
        with client.beta.threads.runs.submit_tool_outputs_stream(
            thread_id=thread.id, run_id=run.id, tool_outputs=outputs, event_handler=Printer()
        ) as stream:
            stream.until_done()
            run = stream.get_final_run()
        print()
    print(f"run {run.id} ended {run.status}; usage {run.usage.total_tokens if run.usage else 0} tokens")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m durable_assistants.emulator.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true", help="exit after the tour instead of keeping the emulator up")
    args = parser.parse_args(argv)
    try:
        with EmulatorProcess() as emulator:
            print(f"emulator at {emulator.base_url}")
            tour(emulator.base_url)
            if not args.once:
                print(f"\nThe emulator stays up at {emulator.base_url} (admin: {emulator.admin_url}). Ctrl-C stops it.")
                assert emulator.process is not None
                emulator.process.wait()
    except KeyboardInterrupt:
        print("\nstopped")
    except Exception as exc:  # a demo prints one line, not a traceback
        print(f"demo failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
