// The shapes dashboard-api sends (services/dashboard-api/API.md).

export type Role = "sales" | "service" | "manager" | string;

export interface Staff {
  id: number;
  name: string;
  role: Role;
  email: string | null;
  on_duty: boolean;
  hunt_order: number;
  phone: string | null;
}

export interface EscalationBrief {
  status: string;
  staff_name: string | null;
  attempt: number;
  final: boolean;
  reason: string | null;
}

export interface LiveCall {
  session_id: string;
  call_sid: string | null;
  caller: string | null;
  customer_name: string | null;
  started_at: number;
  duration_s: number | null;
  state: "ai" | "escalating" | "in_conference" | "ended" | string;
  handler: string | null;
  human_status: string | null;
  escalation: EscalationBrief | null;
}

export interface Escalation {
  session_id: string;
  caller: string | null;
  customer_name: string | null;
  status: string;
  staff_name: string | null;
  attempt: number;
  final: boolean;
  reason: string | null;
  reason_text: string | null;
  started_at: number;
  updated_at: number;
}

export interface CallSummary {
  session_id: string;
  caller: string | null;
  customer_name: string | null;
  started_at: number;
  ended_at: number | null;
  duration_s: number | null;
  outcome: string | null;
  summary: string | null;
}

export interface Turn {
  role: "user" | "assistant" | string;
  text: string;
  at: number;
  interrupted?: boolean;
}

export interface CallDetail extends CallSummary {
  turns: Turn[];
  latency: Record<string, unknown>[];
  escalation: Record<string, unknown>[];
  appointments: Record<string, unknown>[];
  barge_ins: number | null;
  end_reason: string | null;
  live: boolean;
}

/** One WebSocket frame: `{seq, type, session_id, at, data}` (a snapshot has no seq). */
export interface Frame {
  seq?: number | null;
  type: string;
  session_id?: string | null;
  at?: number | null;
  data: Record<string, unknown>;
}

export interface Snapshot {
  live_calls: LiveCall[];
  escalations: Escalation[];
  staff: Staff[];
}
