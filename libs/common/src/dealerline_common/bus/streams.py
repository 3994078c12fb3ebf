"""The JetStream streams the fleet uses (:data:`STREAMS`) and their idempotent creation,
plus the key-value buckets services keep small shared records in."""

from __future__ import annotations

from dataclasses import dataclass

import nats.js.errors
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

from .. import subjects
from ..logs import get_logger

__all__ = ["MiB", "STREAMS", "StreamSpec", "ensure_streams", "key_value"]

MiB = 1024 * 1024

log = get_logger(__name__)


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: list[str]
    work_queue: bool
    max_age_s: float
    # The service that consumes the stream: the one NATS user that may update its settings
    # (every service may create it, so none waits for another to start).
    owner: str
    max_msg_size: int = 2 * MiB


STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec(subjects.STREAM_UTTERANCES, [subjects.ALL_UTTERANCES], True, 300, "stt"),
    StreamSpec(subjects.STREAM_TRANSCRIPTS, [subjects.ALL_TRANSCRIPTS], True, 300, "agent"),
    StreamSpec(subjects.STREAM_SAY, [subjects.ALL_SAY], True, 120, "tts"),
    StreamSpec(subjects.STREAM_EVENTS, [subjects.ALL_EVENTS], False, 7 * 86400, "aftercall"),
    StreamSpec(
        subjects.STREAM_ESCALATIONS, [subjects.ESCALATION_REQUEST], True, 3600, "escalation"
    ),
    StreamSpec(subjects.STREAM_NOTIFY, [subjects.ALL_NOTIFY], True, 7 * 86400, "aftercall"),
    StreamSpec(subjects.STREAM_AGENT_JOBS, [subjects.ALL_AGENT_JOBS], True, 300, "agent"),
)


def storage_type(file_storage: bool) -> api.StorageType:
    return api.StorageType.FILE if file_storage else api.StorageType.MEMORY


async def ensure_streams(
    js: JetStreamContext,
    specs: tuple[StreamSpec, ...],
    *,
    file_storage: bool,
    updater: str | None = None,
) -> None:
    """Create every stream, or update one whose settings changed; safe to run often.

    ``updater``: the service whose NATS user this is; a stream it does not own whose
    settings differ is left to its owner (the user may not update it). None: anonymous,
    every stream is updated."""
    storage = storage_type(file_storage)
    for spec in specs:
        config = api.StreamConfig(
            name=spec.name,
            subjects=spec.subjects,
            retention=api.RetentionPolicy.WORK_QUEUE
            if spec.work_queue
            else api.RetentionPolicy.LIMITS,
            storage=storage,
            max_age=spec.max_age_s,
            max_msg_size=spec.max_msg_size,
            duplicate_window=120.0,
            discard=api.DiscardPolicy.OLD,
        )
        try:
            await js.add_stream(config)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != 10058:  # name in use with another configuration
                raise
            if updater is not None and updater != spec.owner:
                log.info(
                    "stream settings differ; its owner updates them",
                    stream=spec.name,
                    owner=spec.owner,
                )
                continue
            current = await js.stream_info(spec.name)
            config.storage = current.config.storage  # storage cannot change in place
            await js.update_stream(config)


async def key_value(
    js: JetStreamContext, bucket: str, ttl_s: float, *, file_storage: bool
) -> KeyValue:
    """The key-value bucket ``bucket``, created (one value per key, ``ttl_s``) if absent."""
    try:
        return await js.key_value(bucket)
    except nats.js.errors.BucketNotFoundError:
        return await js.create_key_value(
            api.KeyValueConfig(
                bucket=bucket, ttl=ttl_s, history=1, storage=storage_type(file_storage)
            )
        )
