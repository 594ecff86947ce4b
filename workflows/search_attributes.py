"""The custom search attributes that make runs findable in the Temporal UI
(``ThreadId = "thread_..."``, ``RunStatus = "requires_action"``).

The local stack registers them on its dev server; a production namespace registers them
once: ``temporal operator search-attribute create --name AssistantId --type Keyword`` (and so
on for each name below).
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

SEARCH_ATTRIBUTE_TYPES: dict[str, str] = {
    "AssistantId": "Keyword",
    "ThreadId": "Keyword",
    "ApiRunId": "Keyword",  # "RunId" is taken: Temporal reserves it for the workflow run
    "RunStatus": "Keyword",
    "ToolNames": "KeywordList",
}


ASSISTANT_ID = SearchAttributeKey.for_keyword("AssistantId")
THREAD_ID = SearchAttributeKey.for_keyword("ThreadId")
RUN_ID = SearchAttributeKey.for_keyword("ApiRunId")
RUN_STATUS = SearchAttributeKey.for_keyword("RunStatus")
TOOL_NAMES = SearchAttributeKey.for_keyword_list("ToolNames")
