"""Work consumers brought in line with the settings at every start.

``pull_subscribe`` with a config leaves an existing durable as it is, so changing
``STT_ACK_WAIT_S`` on a running deployment used to do nothing. :func:`ensure_consumer`
creates the durable, or updates the fields a running consumer may change (NATS 2.10+:
a create with the same durable name updates them) and logs what changed. Fields that
cannot change in place (deliver policy, ack policy) are kept as the consumer has them."""

from __future__ import annotations

import nats.js.errors
from nats.js import JetStreamContext, api

from ..logs import get_logger

__all__ = ["UPDATABLE", "ensure_consumer"]

log = get_logger(__name__)

# What the bus sets on a work consumer and NATS can change in place.
UPDATABLE = ("ack_wait", "max_deliver", "max_ack_pending", "filter_subject")


def _differences(current: api.ConsumerConfig, wanted: api.ConsumerConfig) -> dict[str, object]:
    changed: dict[str, object] = {}
    for field in UPDATABLE:
        old, new = getattr(current, field), getattr(wanted, field)
        if new is not None and old != new:
            changed[field] = {"from": old, "to": new}
    return changed


async def ensure_consumer(
    js: JetStreamContext, stream: str, wanted: api.ConsumerConfig
) -> api.ConsumerInfo:
    """The durable ``wanted.durable_name`` on ``stream``, created or updated to ``wanted``."""
    durable = wanted.durable_name
    assert durable is not None, "a work consumer is durable"
    info: api.ConsumerInfo
    try:
        info = await js.consumer_info(stream, durable)
    except nats.js.errors.NotFoundError:
        try:
            created: api.ConsumerInfo = await js.add_consumer(stream, wanted)
            return created
        except nats.js.errors.BadRequestError:
            # Another replica created it first (possibly with other settings): update below.
            info = await js.consumer_info(stream, durable)
    changed = _differences(info.config, wanted)
    if not changed:
        return info
    config = info.config.evolve(**{field: getattr(wanted, field) for field in changed})
    updated: api.ConsumerInfo = await js.add_consumer(stream, config)
    log.info("work consumer settings updated", stream=stream, consumer=durable, changed=changed)
    return updated
