"""The custom search attributes that make runs findable in the Temporal UI
(``ThreadId = "thread_..."``, ``RunStatus = "requires_action"``), and a thread's queue with
the runs waiting in it (``QueuedRuns = "assistant-run/..."``).

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
    "QueuedRuns": "KeywordList",  # on a ThreadQueue: the workflow IDs of the runs waiting in it
    "AwaitingApproval": "Bool",  # a run with a tool call waiting for a person's decision
}


ASSISTANT_ID = SearchAttributeKey.for_keyword("AssistantId")
THREAD_ID = SearchAttributeKey.for_keyword("ThreadId")
RUN_ID = SearchAttributeKey.for_keyword("ApiRunId")
RUN_STATUS = SearchAttributeKey.for_keyword("RunStatus")
TOOL_NAMES = SearchAttributeKey.for_keyword_list("ToolNames")
QUEUED_RUNS = SearchAttributeKey.for_keyword_list("QueuedRuns")
AWAITING_APPROVAL = SearchAttributeKey.for_bool("AwaitingApproval")

# QueuedRuns holds the first waiting runs only: at most this many, taking at most this many
# bytes as JSON (Temporal refuses a search attribute value over 2 KB by default,
# frontend.searchAttributesSizeOfValueLimit, and a refused upsert fails the workflow task).
QUEUED_RUNS_MAX = 100
# What each workflow upserts: it does so only where the namespace has all of its own (an
# upsert of an attribute the namespace lacks fails the workflow task, again and again).
RUN_ATTRIBUTES = ("AssistantId", "ThreadId", "ApiRunId", "RunStatus", "ToolNames")
QUEUE_ATTRIBUTES = ("ThreadId", "QueuedRuns")
# Upserted on its own, only where the namespace has it (added after the others: a namespace
# set up before it keeps its runs' other attributes until `setup-namespace` adds it).
APPROVAL_ATTRIBUTE = "AwaitingApproval"
VALUE_MAX_BYTES = 1_800
