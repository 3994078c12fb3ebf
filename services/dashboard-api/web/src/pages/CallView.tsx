// One call: the transcript of both sides as it grows, the agent's state (customer, booking
// slots filling in), the escalation timeline and a per-turn latency chart. A live call is
// built from its socket (every event so far, then live ones); a finished one from REST.
import { useCallback, useEffect, useState } from "react";
import { ApiError, api } from "../api";
import { Badge, ErrorNote, ReconnectBanner, clock, duration } from "../components";
import LatencyChart from "../LatencyChart";
import type { LatencyTurn } from "../LatencyChart";
import type { CallDetail, Frame } from "../types";
import { useNow } from "../useNow";
import { useSocket } from "../useSocket";

interface Line {
  key: string;
  role: string;
  text: string;
  at: number;
  interrupted: boolean;
}

interface EscalationStep {
  key: string;
  at: number;
  status: string;
  staff_name: string | null;
  attempt: number;
  detail: string | null;
  final: boolean;
  reason: string | null;
}

interface AgentState {
  customer?: { name?: string | null; returning?: boolean; vehicles?: unknown[] } | null;
  booking_slots?: Record<string, unknown>;
  confirmed_appointment?: { service?: string; start?: string; bay?: string | null } | null;
  escalation_in_progress?: boolean;
  escalation?: { status?: string; staff_name?: string | null } | null;
  end_requested?: boolean;
}

interface CallData {
  lines: Line[];
  escalation: EscalationStep[];
  latency: LatencyTurn[];
  appointments: Record<string, unknown>[];
  state: AgentState | null;
  startedAt: number | null;
  endedAt: number | null;
  endReason: string | null;
  caller: string | null;
  streams: number;
}

const EMPTY: CallData = {
  lines: [],
  escalation: [],
  latency: [],
  appointments: [],
  state: null,
  startedAt: null,
  endedAt: null,
  endReason: null,
  caller: null,
  streams: 0,
};

const SLOTS: { key: string; label: string }[] = [
  { key: "service", label: "Service" },
  { key: "date", label: "Date" },
  { key: "time", label: "Time" },
  { key: "vehicle", label: "Vehicle" },
  { key: "notes", label: "Notes" },
];

function s(value: unknown): string | null {
  return typeof value === "string" ? value : null;
}

function step(key: string, d: Record<string, unknown>, at: number): EscalationStep {
  return {
    key,
    at: typeof d.at === "number" ? d.at : at,
    status: s(d.status) ?? "none",
    staff_name: s(d.staff_name),
    attempt: Number(d.attempt ?? 0),
    detail: s(d.detail),
    final: Boolean(d.final),
    reason: s(d.reason),
  };
}

function applyFrame(c: CallData, f: Frame): CallData {
  const d = f.data ?? {};
  const at = f.at ?? (typeof d.at === "number" ? d.at : Date.now() / 1000);
  const key = String(f.seq ?? `${f.type}-${at}`);
  switch (f.type) {
    case "call_started":
      return { ...c, startedAt: c.startedAt ?? at, caller: s(d.from_masked) ?? c.caller };
    case "stream_started":
      return { ...c, streams: c.streams + 1, startedAt: c.startedAt ?? at };
    case "transcript":
      return {
        ...c,
        lines: [
          ...c.lines,
          {
            key,
            role: s(d.role) ?? "?",
            text: s(d.text) ?? "",
            at,
            interrupted: Boolean(d.interrupted),
          },
        ],
      };
    case "state_update":
      return { ...c, state: (d.state as AgentState) ?? c.state };
    case "human_status":
      return { ...c, escalation: [...c.escalation, step(key, d, at)] };
    case "latency":
      return {
        ...c,
        latency: [
          ...c.latency,
          {
            turn_id: s(d.turn_id) ?? key,
            stages_ms: (d.stages_ms as Record<string, number>) ?? {},
          },
        ],
      };
    case "appointment":
      return { ...c, appointments: [...c.appointments, d] };
    case "call_ended":
      return { ...c, endedAt: at, endReason: s(d.reason) };
    default:
      return c;
  }
}

function fromDetail(detail: CallDetail): CallData {
  return {
    ...EMPTY,
    lines: detail.turns.map((t, i) => ({
      key: `t${i}`,
      role: t.role,
      text: t.text,
      at: t.at,
      interrupted: Boolean(t.interrupted),
    })),
    escalation: detail.escalation.map((e, i) => step(`e${i}`, e, detail.started_at)),
    latency: detail.latency.map((l, i) => ({
      turn_id: s(l.turn_id) ?? `l${i}`,
      stages_ms: ((l.stages_ms as Record<string, number>) ?? l) as Record<string, number>,
    })),
    appointments: detail.appointments,
    startedAt: detail.started_at,
    endedAt: detail.ended_at,
    endReason: detail.end_reason,
    caller: detail.caller,
  };
}

function Transcript({ lines }: { lines: Line[] }) {
  if (lines.length === 0) return <p className="text-sm text-slate-500">Nothing said yet.</p>;
  return (
    <ol className="space-y-2" data-testid="transcript">
      {lines.map((l) => (
        <li
          key={l.key}
          data-testid="transcript-line"
          data-role={l.role}
          className={`flex ${l.role === "user" ? "justify-start" : "justify-end"}`}
        >
          <div
            className={`max-w-[80%] rounded-lg px-3 py-2 text-sm ${
              l.role === "user" ? "bg-slate-100" : "bg-sky-100"
            }`}
          >
            <div className="mb-0.5 text-xs text-slate-500">
              {l.role === "user" ? "Caller" : "Agent"} · {clock(l.at)}
              {l.interrupted && " · interrupted"}
            </div>
            {l.text}
          </div>
        </li>
      ))}
    </ol>
  );
}

function AgentStatePanel({
  state,
  appointments,
  ended,
}: {
  state: AgentState | null;
  appointments: Record<string, unknown>[];
  ended: boolean;
}) {
  const slots = state?.booking_slots ?? {};
  const filled = SLOTS.filter(
    (slot) => slots[slot.key] !== null && slots[slot.key] !== undefined && slots[slot.key] !== "",
  );
  return (
    <div className="space-y-3 text-sm" data-testid="agent-state">
      <div>
        <span className="text-slate-500">Customer: </span>
        <span data-testid="agent-customer">
          {state?.customer?.name ?? "not identified"}
          {state?.customer?.returning ? " (returning)" : ""}
        </span>
      </div>
      <div>
        <div className="mb-1 text-slate-500">
          Booking slots ({filled.length}/{SLOTS.length})
        </div>
        <div className="mb-2 h-1.5 rounded bg-slate-200">
          <div
            className="h-1.5 rounded bg-emerald-500"
            style={{ width: `${(filled.length / SLOTS.length) * 100}%` }}
          />
        </div>
        <dl className="grid grid-cols-[5rem_1fr] gap-y-1" data-testid="booking-slots">
          {SLOTS.map((slot) => {
            const value = slots[slot.key];
            const has = value !== null && value !== undefined && value !== "";
            return (
              <div
                key={slot.key}
                className="contents"
                data-testid="booking-slot"
                data-filled={String(has)}
              >
                <dt className="text-slate-500">{slot.label}</dt>
                <dd className={has ? "font-medium" : "text-slate-400"}>
                  {has ? String(value) : "—"}
                </dd>
              </div>
            );
          })}
        </dl>
      </div>
      {state?.confirmed_appointment && (
        <div
          className="rounded bg-emerald-50 px-2 py-1 text-emerald-900"
          data-testid="confirmed-appointment"
        >
          Booked: {state.confirmed_appointment.service} at {state.confirmed_appointment.start}
        </div>
      )}
      {appointments.map((a, i) => (
        <div key={i} className="text-xs text-slate-600" data-testid="appointment-event">
          {String(a.action ?? "")} #{String(a.appointment_id ?? a.id ?? "")}{" "}
          {String(a.service ?? "")} {String(a.start ?? "")}
        </div>
      ))}
      {state?.escalation_in_progress && !ended && (
        <div className="text-amber-800">Escalation in progress</div>
      )}
    </div>
  );
}

function EscalationTimeline({
  steps,
  startedAt,
}: {
  steps: EscalationStep[];
  startedAt: number | null;
}) {
  if (steps.length === 0) return <p className="text-sm text-slate-500">No escalation.</p>;
  return (
    <ol className="space-y-1 text-sm" data-testid="escalation-timeline">
      {steps.map((e) => (
        <li key={e.key} data-testid="escalation-step" data-status={e.status} className="flex gap-2">
          <span className="w-10 shrink-0 text-right tabular-nums text-slate-500">
            {startedAt ? `+${Math.max(0, e.at - startedAt).toFixed(0)}s` : clock(e.at)}
          </span>
          <div className="min-w-0">
            <div className="flex flex-wrap items-center gap-x-2">
              <Badge value={e.status} />
              <span className="whitespace-nowrap">{e.staff_name ?? ""}</span>
              <span className="whitespace-nowrap text-xs text-slate-500">
                attempt {e.attempt}
                {e.reason ? ` · ${e.reason}` : ""}
                {e.final ? " · final" : ""}
              </span>
            </div>
            {e.detail && <div className="text-xs text-slate-500">{e.detail}</div>}
          </div>
        </li>
      ))}
    </ol>
  );
}

function Card({ title, children }: { title: string; children: React.ReactNode }) {
  return (
    <div className="rounded-lg bg-white p-3 shadow">
      <h2 className="mb-2 font-medium">{title}</h2>
      {children}
    </div>
  );
}

export default function CallView({ sessionId }: { sessionId: string }) {
  const [data, setData] = useState<CallData>(EMPTY);
  const [live, setLive] = useState<boolean | null>(null);
  const [error, setError] = useState<string | null>(null);
  const now = useNow();

  useEffect(() => {
    let cancelled = false;
    api<CallDetail>(`/api/calls/${encodeURIComponent(sessionId)}`)
      .then((detail) => {
        if (cancelled) return;
        setLive(detail.live);
        if (!detail.live) setData(fromDetail(detail));
      })
      .catch((err: unknown) => {
        if (cancelled) return;
        if (err instanceof ApiError && err.status === 404) {
          setLive(true); // not recorded yet: it may have just started; follow the socket
        } else {
          setError(err instanceof Error ? err.message : String(err));
          setLive(true);
        }
      });
    return () => {
      cancelled = true;
    };
  }, [sessionId]);

  const onFrame = useCallback((frame: Frame) => setData((c) => applyFrame(c, frame)), []);
  const socket = useSocket(live ? `/ws/${encodeURIComponent(sessionId)}` : null, onFrame);

  const ended = data.endedAt !== null;
  const seconds = data.startedAt ? (ended ? data.endedAt! : now) - data.startedAt : null;
  const lastEscalation = data.escalation[data.escalation.length - 1];
  const agentStatus = ended
    ? "ended"
    : lastEscalation && !lastEscalation.final
      ? lastEscalation.status === "in_conference"
        ? "in_conference"
        : "escalating"
      : "ai";

  return (
    <section className="space-y-4" data-testid="call-view" data-session-id={sessionId}>
      {live && <ReconnectBanner socket={socket} />}
      <ErrorNote error={error} />
      <div className="flex items-center gap-3">
        <a href="#/" className="text-sm text-sky-700 hover:underline">
          ← Live calls
        </a>
        <h1 className="text-xl font-semibold">
          {data.state?.customer?.name ?? data.caller ?? "Call"}
        </h1>
        <span className="text-sm text-slate-500">{data.caller ?? ""}</span>
        <Badge value={agentStatus} testid="call-state" />
        <span className="tabular-nums text-sm text-slate-600" data-testid="call-duration">
          {duration(seconds)}
        </span>
        {ended && <span className="text-sm text-slate-500">ended: {data.endReason ?? "—"}</span>}
      </div>
      <div className="grid gap-4 lg:grid-cols-3">
        <div className="lg:col-span-2">
          <Card title="Transcript">
            <Transcript lines={data.lines} />
          </Card>
        </div>
        <div className="space-y-4">
          <Card title="Agent state">
            <AgentStatePanel state={data.state} appointments={data.appointments} ended={ended} />
          </Card>
          <Card title="Escalation">
            <EscalationTimeline steps={data.escalation} startedAt={data.startedAt} />
          </Card>
        </div>
      </div>
      <Card title="Latency per turn (ms, by stage)">
        <LatencyChart turns={data.latency} />
      </Card>
    </section>
  );
}
