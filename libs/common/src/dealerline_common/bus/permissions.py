"""What each service's NATS user may publish and subscribe to: the one source of the fleet's
least-privilege NATS authorization, built from :mod:`dealerline_common.subjects`.

Each service connects as its own user (its name: ``gateway``, ``stt``, ...). A user may
publish only the subjects its service sends on, subscribe only to those it reads, and
reach the JetStream API only for the streams, consumers and key-value buckets it uses.
Its replies come to its own inbox prefix (``_INBOX.<user>.``, which the :class:`~.client.Bus`
sets), so no service reads another's replies; a service that answers requests (``stt``
probes, ``escalation`` staff actions) may publish only to the reply subject of a request
it received (NATS ``allow_responses``).

``python -m dealerline_common.bus.permissions --helm`` writes the chart's copy
(``deploy/k8s/files/nats-authorization.conf``, passwords as ``$NATS_PASSWORD_<USER>``
variables the NATS pod reads from the Secret); a test asserts the checked-in file is what
this module generates, and another runs a real nats-server with it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .. import subjects
from .auth import inbox_prefix
from .streams import STREAMS

__all__ = [
    "HELM_FILE",
    "PERMISSIONS",
    "Permissions",
    "authorization_conf",
    "inbox_prefix",
    "password_variable",
]

HELM_FILE = Path("deploy") / "k8s" / "files" / "nats-authorization.conf"


@dataclass(frozen=True)
class Permissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    responses: bool = False  # may answer requests it received (only to their reply subject)


def password_variable(user: str) -> str:
    """The variable holding ``user``'s password in the NATS server's configuration."""
    return "NATS_PASSWORD_" + user.upper().replace("-", "_")


def _kv(bucket: str) -> list[str]:
    stream = f"KV_{bucket}"
    return [
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.STREAM.CREATE.{stream}",
        f"$JS.API.STREAM.MSG.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
        f"$KV.{bucket}.>",
    ]


def _consume(*streams: str) -> list[str]:
    """Pull consumers on ``streams``: create, look up, pull, delete, and acknowledge."""
    out = []
    for s in streams:
        out += [
            f"$JS.API.CONSUMER.CREATE.{s}.>",
            f"$JS.API.CONSUMER.DURABLE.CREATE.{s}.>",
            f"$JS.API.CONSUMER.INFO.{s}.>",
            f"$JS.API.CONSUMER.MSG.NEXT.{s}.>",
            f"$JS.API.CONSUMER.DELETE.{s}.>",
            f"$JS.ACK.{s}.>",
        ]
    return out


def _ensure_streams(user: str) -> list[str]:
    """Every service creates the fleet's streams at start (BusService), so none waits for
    another; only a stream's owner (its consumer) may change its settings."""
    out = ["$JS.API.INFO"]
    for spec in STREAMS:
        ops = ("INFO", "CREATE", "UPDATE") if spec.owner == user else ("INFO", "CREATE")
        out += [f"$JS.API.STREAM.{op}.{spec.name}" for op in ops]
    return out


def _user(
    user: str, publish: Iterable[str], subscribe: Iterable[str], *, responses: bool = False
) -> Permissions:
    pub = [*_ensure_streams(user), *publish]
    sub = [*subscribe, f"{inbox_prefix(user)}.>"]
    return Permissions(tuple(dict.fromkeys(pub)), tuple(dict.fromkeys(sub)), responses)


s = subjects
# Dashboard -> the run of one escalation: claim or pass (subjects.staff_action), any call.
ALL_STAFF_ACTIONS = subjects.staff_action("sid").replace(".sid.", ".*.")
PERMISSIONS: dict[str, Permissions] = {
    "gateway": _user(
        "gateway",
        [
            s.ALL_UTTERANCES,
            s.ALL_CONTROL,
            s.ALL_EVENTS,
            s.ALL_AGENT_JOBS,  # greetings to take (incoming call, stream started)
            s.STT_PROBE,
            *_kv(s.KV_STREAM_TOKENS),
            *_kv("dl_handoffs"),  # the gateway's hand-off markers (dealerline_gateway.handoff)
            *_kv("dl_call_admissions"),  # one admission per CallSid (dealerline_gateway.admissions)
        ],
        [s.ALL_AUDIO, s.ALL_COMMAND, s.ALL_ESCALATION],
    ),
    "stt": _user(
        "stt",
        [s.ALL_TRANSCRIPTS, *_consume(s.STREAM_UTTERANCES)],
        [s.STT_PROBE],
        responses=True,
    ),
    "tts": _user("tts", [s.ALL_AUDIO, *_consume(s.STREAM_SAY)], [s.ALL_CONTROL]),
    "agent": _user(
        "agent",
        [
            s.ESCALATION_REQUEST,
            s.ALL_SAY,
            s.ALL_COMMAND,
            s.ALL_EVENTS,
            s.NOTIFY_SMS,  # one-time codes, notices of a contact change
            s.NOTIFY_EMAIL,
            *_consume(s.STREAM_TRANSCRIPTS, s.STREAM_AGENT_JOBS),
        ],
        [s.ALL_CONTROL, s.ALL_ESCALATION],
    ),
    "escalation": _user(
        "escalation",
        [
            s.ALL_ESCALATION,
            s.ALL_EVENTS,
            s.ALL_AGENT_JOBS,  # escalation outcomes the agent speaks
            *_consume(s.STREAM_ESCALATIONS),
        ],
        [s.ALL_ESCALATION, s.ALL_CONTROL, ALL_STAFF_ACTIONS, s.STAFF_DUTY],
        responses=True,
    ),
    "dashboard-api": _user(
        "dashboard-api",
        [s.STAFF_DUTY, ALL_STAFF_ACTIONS, *_consume(s.STREAM_EVENTS)],
        [s.ALL_ESCALATION, s.STAFF_DUTY],
    ),
    "aftercall": _user(
        "aftercall",
        [s.ALL_NOTIFY, s.ALL_EVENTS, *_consume(s.STREAM_NOTIFY, s.STREAM_EVENTS)],
        [],
    ),
}
del s


def _conf_list(items: Iterable[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def authorization_conf() -> str:
    """The ``authorization`` block of nats-server's configuration: one user per service,
    each password the variable :func:`password_variable` names (nats-server resolves it
    from its environment, which the chart fills from the Secret)."""
    lines = [
        "# Generated by `python -m dealerline_common.bus.permissions --helm` from",
        "# libs/common/src/dealerline_common/bus/permissions.py: do not edit by hand.",
        "authorization {",
        "  users = [",
    ]
    for user, perms in PERMISSIONS.items():
        password = f"${password_variable(user)}"
        lines += [
            "    {",
            f"      user: {json.dumps(user)}",
            f"      password: {password}",
            "      permissions: {",
            f"        publish: {{ allow: {_conf_list(perms.publish)} }}",
            f"        subscribe: {{ allow: {_conf_list(perms.subscribe)} }}",
        ]
        if perms.responses:
            lines.append('        allow_responses: { max: 1, expires: "1m" }')
        lines += ["      }", "    }"]
    lines += ["  ]", "}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--helm", action="store_true", help=f"write the chart's copy ({HELM_FILE}) under --root"
    )
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the checkout")
    args = parser.parse_args(argv)
    text = authorization_conf()
    if args.helm:
        path = args.root / HELM_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
