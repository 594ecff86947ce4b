"""The custom search attributes that make runs findable in the Temporal UI
(``ThreadId = "thread_..."``, ``RunStatus = "requires_action"``).

The local stack registers them on its dev server; a production namespace registers them
once: ``temporal operator search-attribute create --name AssistantId --type Keyword`` (and so
on for each name below).
"""

from __future__ import annotations

SEARCH_ATTRIBUTE_TYPES: dict[str, str] = {
    "AssistantId": "Keyword",
    "ThreadId": "Keyword",
    "RunId": "Keyword",
    "RunStatus": "Keyword",
    "ToolNames": "KeywordList",
}
