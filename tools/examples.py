"""Example tools for the demo and the tests. Importing this module registers them."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta
from typing import Literal

from durable_assistants.tools.registry import ToolContext, tool

_FORECASTS = ("sunny", "cloudy", "light rain", "windy", "snow showers")


def _stable_number(text: str, low: int, high: int) -> int:
    digest = int(hashlib.sha256(text.lower().encode()).hexdigest(), 16)
    return low + digest % (high - low + 1)


@tool
def get_weather(city: str) -> dict[str, object]:
    """Today's weather for a city: forecast and temperature in Celsius."""
    return {
        "city": city,
        "forecast": _FORECASTS[_stable_number(city, 0, len(_FORECASTS) - 1)],
        "celsius": _stable_number(city + "t", -5, 32),
    }


@tool
def convert_temperature(value: float, to: Literal["fahrenheit", "celsius"]) -> float:
    """Convert a temperature from Celsius to Fahrenheit, or the other way round."""
    return round(value * 9 / 5 + 32, 1) if to == "fahrenheit" else round((value - 32) * 5 / 9, 1)


@tool
async def city_population(city: str) -> dict[str, object]:
    """Population of a city (an illustrative figure)."""
    await asyncio.sleep(0.05)
    return {"city": city, "population": _stable_number(city + "p", 50_000, 9_000_000)}


@tool(timeout=timedelta(minutes=5), heartbeat_timeout=timedelta(seconds=10), max_attempts=2)
async def compile_report(topic: str, sections: int, context: ToolContext) -> str:
    """Compile a multi-section report on a topic. Slow: about two seconds a section."""
    done = []
    for section in range(1, sections + 1):
        await asyncio.sleep(2)
        done.append(f"{section}. {topic}: section {section} checked")
        context.heartbeat({"section": section, "of": sections})
    return "\n".join(done)
