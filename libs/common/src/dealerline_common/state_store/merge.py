"""Merging background results (queued notifications, task records) into a conversation
state, the same way for every store: each notification exactly once, each task record
newest-wins."""

from __future__ import annotations

from ..state import BackgroundTask, ConversationState, Notification

__all__ = ["merge_notifications", "merge_tasks"]


def merge_notifications(
    state: ConversationState, notifications: list[Notification], delivered: set[str]
) -> list[str]:
    """Append the not-yet-delivered notifications to ``state`` in place (first of each id
    wins) and return their ids; an id counts as delivered if either the delivered set or the
    state itself records it."""
    seen = delivered | set(state.delivered_notifications)
    new_ids: list[str] = []
    for note in notifications:
        if note.id in seen:
            continue
        seen.add(note.id)
        new_ids.append(note.id)
        state.pending_notifications.append(note)
        state.delivered_notifications.append(note.id)
    return new_ids


def merge_tasks(state: ConversationState, tasks: list[BackgroundTask]) -> bool:
    """Put each task record into ``state.pending_tasks`` (replace if newer, else append);
    True if anything changed."""
    changed = False
    for record in sorted(tasks, key=lambda t: (t.updated_at, t.task_id)):
        index = next(
            (i for i, t in enumerate(state.pending_tasks) if t.task_id == record.task_id), None
        )
        if index is None:
            state.pending_tasks.append(record)
            changed = True
            continue
        current = state.pending_tasks[index]
        # Newer wins; an equal timestamp with different content also takes the record, so
        # the state converges on the record and the next sync sees no change.
        if record.updated_at >= current.updated_at and record != current:
            state.pending_tasks[index] = record
            changed = True
    return changed
