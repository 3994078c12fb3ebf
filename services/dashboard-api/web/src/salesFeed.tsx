// The sales socket, shared by the live-calls page and the sales view: a `snapshot` first
// (live calls, escalations, staff), then every call's events and `staff_duty` changes.
// Events are applied at once; the REST lists are then fetched again (debounced) so that
// derived fields (handler, duration, reason text) stay the server's.
import { createContext, useCallback, useContext, useEffect, useRef, useState } from "react";
import type { ReactNode } from "react";
import { api } from "./api";
import type { Escalation, Frame, LiveCall, Snapshot, Staff } from "./types";
import { useSocket } from "./useSocket";
import type { SocketState } from "./useSocket";

export interface SalesFeed extends Snapshot {
  socket: SocketState;
  loaded: boolean;
  refresh: () => void;
  setStaffMember: (staff: Staff) => void;
}

const Context = createContext<SalesFeed | null>(null);

export function useSalesFeed(): SalesFeed {
  const feed = useContext(Context);
  if (feed === null) throw new Error("useSalesFeed outside SalesFeedProvider");
  return feed;
}

const ESCALATING = new Set(["calling", "ringing", "waiting_confirmation", "confirmed"]);

function str(value: unknown): string | null {
  return typeof value === "string" ? value : null;
}

function applyEvent(calls: LiveCall[], frame: Frame): LiveCall[] {
  const sid = frame.session_id;
  if (!sid) return calls;
  const d = frame.data;
  const at = frame.at ?? Date.now() / 1000;
  const known = calls.find((c) => c.session_id === sid);
  if (frame.type === "call_started" && !known) {
    const row: LiveCall = {
      session_id: sid,
      call_sid: str(d.call_sid),
      caller: str(d.from_masked),
      customer_name: null,
      started_at: at,
      duration_s: 0,
      state: "ai",
      handler: "AI",
      human_status: null,
      escalation: null,
    };
    return [row, ...calls];
  }
  if (!known) return calls;
  return calls.map((c) => {
    if (c.session_id !== sid) return c;
    if (frame.type === "call_ended") return { ...c, state: "ended" };
    if (frame.type === "human_status") {
      const status = str(d.status) ?? "none";
      const final = Boolean(d.final);
      const state = final
        ? "ai"
        : status === "in_conference"
          ? "in_conference"
          : ESCALATING.has(status)
            ? "escalating"
            : c.state;
      return {
        ...c,
        state,
        human_status: status,
        handler: status === "in_conference" ? (str(d.staff_name) ?? c.handler) : "AI",
        escalation: {
          status,
          staff_name: str(d.staff_name),
          attempt: Number(d.attempt ?? 0),
          final,
          reason: str(d.reason),
        },
      };
    }
    if (frame.type === "state_update") {
      const state = d.state as { customer?: { name?: string | null } | null } | undefined;
      const name = state?.customer?.name;
      return name ? { ...c, customer_name: name } : c;
    }
    return c;
  });
}

function applyEscalation(rows: Escalation[], calls: LiveCall[], frame: Frame): Escalation[] {
  if (frame.type !== "human_status" || !frame.session_id) return rows;
  const d = frame.data;
  const at = frame.at ?? Date.now() / 1000;
  const patch = {
    status: str(d.status) ?? "none",
    staff_name: str(d.staff_name),
    attempt: Number(d.attempt ?? 0),
    final: Boolean(d.final),
    reason: str(d.reason),
    updated_at: at,
  };
  if (rows.some((r) => r.session_id === frame.session_id)) {
    return rows.map((r) => (r.session_id === frame.session_id ? { ...r, ...patch } : r));
  }
  const call = calls.find((c) => c.session_id === frame.session_id);
  const row: Escalation = {
    session_id: frame.session_id,
    caller: call?.caller ?? null,
    customer_name: call?.customer_name ?? null,
    reason_text: null,
    started_at: at,
    ...patch,
  };
  return [row, ...rows];
}

export function SalesFeedProvider({ children }: { children: ReactNode }) {
  const [snapshot, setSnapshot] = useState<Snapshot>({
    live_calls: [],
    escalations: [],
    staff: [],
  });
  const [loaded, setLoaded] = useState(false);
  const timer = useRef<number | undefined>(undefined);

  const refetch = useCallback(async () => {
    try {
      const [live, escalations] = await Promise.all([
        api<LiveCall[]>("/api/calls/live"),
        api<Escalation[]>("/api/escalations"),
      ]);
      setSnapshot((s) => ({ ...s, live_calls: live, escalations }));
    } catch {
      // the socket's own state is shown; a failed refresh is retried on the next event
    }
  }, []);

  const refresh = useCallback(() => {
    window.clearTimeout(timer.current);
    timer.current = window.setTimeout(() => void refetch(), 400);
  }, [refetch]);

  useEffect(() => () => window.clearTimeout(timer.current), []);

  const onFrame = useCallback(
    (frame: Frame) => {
      if (frame.type === "snapshot") {
        const d = frame.data as unknown as Partial<Snapshot>;
        setSnapshot({
          live_calls: d.live_calls ?? [],
          escalations: d.escalations ?? [],
          staff: d.staff ?? [],
        });
        setLoaded(true);
        return;
      }
      if (frame.type === "staff_duty") {
        const member = frame.data as unknown as Staff;
        setSnapshot((s) => ({
          ...s,
          staff: s.staff.some((m) => m.id === member.id)
            ? s.staff.map((m) => (m.id === member.id ? { ...m, ...member } : m))
            : [...s.staff, member],
        }));
        return;
      }
      if (frame.type === "escalation" && frame.session_id) {
        // The server's own row for one escalation (sent on every status change).
        const row = frame.data as unknown as Escalation;
        setSnapshot((s) => ({
          ...s,
          escalations: s.escalations.some((e) => e.session_id === frame.session_id)
            ? s.escalations.map((e) => (e.session_id === frame.session_id ? { ...e, ...row } : e))
            : [row, ...s.escalations],
        }));
        return;
      }
      setSnapshot((s) => ({
        ...s,
        live_calls: applyEvent(s.live_calls, frame),
        escalations: applyEscalation(s.escalations, s.live_calls, frame),
      }));
      if (["call_started", "call_ended", "human_status", "call_recorded"].includes(frame.type)) {
        refresh();
      }
    },
    [refresh],
  );

  const socket = useSocket("/ws/sales", onFrame);

  const setStaffMember = useCallback((member: Staff) => {
    setSnapshot((s) => ({
      ...s,
      staff: s.staff.map((m) => (m.id === member.id ? { ...m, ...member } : m)),
    }));
  }, []);

  return (
    <Context.Provider value={{ ...snapshot, socket, loaded, refresh, setStaffMember }}>
      {children}
    </Context.Provider>
  );
}
