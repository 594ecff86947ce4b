"""An example tool that needs a person's approval: refunds over 100 wait for a decision
(``durable-assistants approve|reject``); smaller ones run at once. ``make demo
DEMO_ARGS=--approval`` loads this module beside ``durable_assistants.tools.examples``."""

from __future__ import annotations

from durable_assistants.tools import tool

APPROVAL_OVER = 100.0


@tool(approval=lambda arguments: arguments["amount"] > APPROVAL_OVER)
def issue_refund(order_id: str, amount: float) -> dict[str, object]:
    """Refund an order (amount in euros). Refunds over 100 need a person's approval."""
    return {"order_id": order_id, "refunded": round(amount, 2), "currency": "EUR"}
