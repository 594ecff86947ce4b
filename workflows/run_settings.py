"""The run workflow's settings: the timeouts and retries of its activities, what it keeps, and
the patch IDs that tell its versions apart (each where it is used says what changed; a patch
ID is never renamed or removed while a history that lacks it may still replay)."""

from __future__ import annotations

from datetime import timedelta
from typing import TypeVar

from temporalio.common import RetryPolicy

# Model-API activities wait for the model inside (polling or streaming) and heartbeat.
MODEL_API_START_TO_CLOSE = timedelta(minutes=15)
MODEL_API_HEARTBEAT = timedelta(seconds=30)
MODEL_API_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0, maximum_interval=timedelta(seconds=30))
CANCEL_START_TO_CLOSE = timedelta(minutes=2)
# A callback: one POST per activity (the workflow keeps the backoff and the budget, so every
# attempt is in the result); backoff from 1 s doubling to 60 s; the newest attempts kept.
CALLBACK_ATTEMPT_TIMEOUT = timedelta(seconds=15)
CALLBACK_FIRST_PAUSE = 1.0
CALLBACK_MAX_PAUSE = 60.0
CALLBACK_ATTEMPTS_KEPT = 10
# Stopping an API run (cancel, then wait for it to end) gives up after this long at most (or
# the request's model-API budget, if shorter): the workflow then ends and says what it left.
CLEANUP_BUDGET = timedelta(minutes=5)
PREVIEW_CHARS = 200
# What a run carries is bounded whatever its length (Temporal's payload limit is 2 MB): a tool
# call's arguments are kept up to this many characters in its record (the tool gets them all),
RECORD_ARGUMENTS_CHARS = 1_000
# the newest this many records are kept (the result says how many there were in all),
RECORDS_KEPT = 500
# and followers can read the newest this many progress events after a continue-as-new;
PROGRESS_KEPT = 1_000
# the newest this many turns' tokens are itemized (the totals and the by-model sums keep all).
TURNS_KEPT = 500
T = TypeVar("T")
# A call that needs approval waits this long for a decision unless the request says otherwise
# (and never past the run's expires_at less the margin and the tool's timeout).
DEFAULT_APPROVAL_SECONDS = 24 * 3600.0
# Responses runs that stop at requires_action on a conversation answer its pending calls.
ANSWER_STOPPED_CALLS = "answer-stopped-calls"
# A cancel during a model activity waits for it to stop the API run, then stops the workflow's run.
WAIT_FOR_MODEL_CANCEL = "wait-for-model-cancel"
SUMMARY_CHARS = 120
# Tool activities: unlimited Temporal attempts within the tool's time budget; the activity
# counts the tool's own failures against max_attempts (activities/tools.py).
TOOL_BUDGET = "tool-budget-counts-own-failures"
RELEASE_FOLLOWERS_ON_FAILURE = "release-followers-on-failure"
# Before each round the workflow asks Temporal whether it was cancelled: a model activity that
# finished its turn without hearing the cancel hands back a result, and the run must still stop.
CANCEL_CHECKED_EACH_ROUND = "cancel-checked-each-round"
# The workflow's own status is the run's outcome: a run that ends failed or expired fails the
# workflow (its RunResult in the failure's details), a cancelled one ends it Canceled; and a
# cancelled run waits until its tools' cancellation is recorded (no pending activity after).
OUTCOME_IS_WORKFLOW_STATUS = "outcome-is-workflow-status"
TOOLS_WAIT_FOR_CANCEL = "tools-wait-for-cancel"
# A round that ends early (the workflow is cancelled, a tool would outlast the run) stops and
# waits for every call of the round before it goes on: a call whose result landed in the same
# workflow task as the cancel ends at once, and asyncio.gather alone then left the others pending.
ROUND_STOPS_TOGETHER = "round-stops-together"
# RunStatus says "running_tools" while a round's tools run, and "requires_action" only once
# their outputs wait to be submitted (a submit that cannot get through shows as that).
RUNNING_TOOLS_STATUS = "running-tools-status"
RUNNING_TOOLS = "running_tools"
# Search attributes are upserted only when a value changes (the same ApiRunId, ThreadId and
# AssistantId every round were a write each).
UPSERT_ONLY_CHANGES = "upsert-only-changes"
# The model activities run the round's inline tools (@tool(inline=True)) and hand back their
# outputs: such a call costs no activity of its own; and they hand back the turn's last
# streamed text with their result instead of signalling it just before (one workflow task
# less per streamed turn). Histories from before never asked for either.
INLINE_TOOLS = "inline-tools"
