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

export interface Callback {
  id: number;
  session_id: string;
  name: string | null;
  phone: string | null;
  preferred_window: string;
  reason: string;
  status: "open" | "done" | string;
  created_at: number | null;
  done_at: number | null;
  done_by: number | null;
  done_by_name: string | null;
}

// The admin area's rows (API.md, "Admin").

export interface Profile {
  name: string;
  address: string | null;
  phone: string | null;
  timezone: string;
  service_desk_email: string | null;
  assistant_name: string;
  persona: string | null;
  voice: string | null;
}

export interface Hours {
  weekday: number;
  day: string;
  closed: boolean;
  opens_at: string | null;
  closes_at: string | null;
}

export interface Bay {
  id: number;
  name: string;
  capacity: number;
  services: string[];
}

export interface AdminStaff {
  id: number;
  name: string;
  phone: string;
  role: string;
  email: string | null;
  on_duty: boolean;
  hunt_order: number;
  has_login: boolean;
}
