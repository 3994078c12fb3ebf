// Small shared pieces: the reconnect banner, time formatting, status badges.
import type { SocketState } from "./useSocket";

export function ReconnectBanner({ socket }: { socket: SocketState }) {
  if (socket.status === "open") return null;
  const text =
    socket.status === "connecting"
      ? "Connecting…"
      : `Reconnecting… (attempt ${socket.attempts}) — live updates paused`;
  return (
    <div
      data-testid="reconnect-banner"
      data-status={socket.status}
      role="status"
      className="mb-3 rounded border border-amber-300 bg-amber-50 px-3 py-2 text-sm text-amber-900"
    >
      {text}
    </div>
  );
}

export function duration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "—";
  const s = Math.max(0, Math.round(seconds));
  const m = Math.floor(s / 60);
  return `${m}:${String(s % 60).padStart(2, "0")}`;
}

export function clock(epoch: number | null | undefined): string {
  if (!epoch) return "—";
  return new Date(epoch * 1000).toLocaleTimeString([], {
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  });
}

export function dateTime(epoch: number | null | undefined): string {
  if (!epoch) return "—";
  return new Date(epoch * 1000).toLocaleString([], {
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
  });
}

const STATE_COLOURS: Record<string, string> = {
  ai: "bg-sky-100 text-sky-800",
  escalating: "bg-amber-100 text-amber-800",
  calling: "bg-amber-100 text-amber-800",
  ringing: "bg-amber-100 text-amber-800",
  waiting_confirmation: "bg-amber-100 text-amber-800",
  confirmed: "bg-emerald-100 text-emerald-800",
  in_conference: "bg-emerald-100 text-emerald-800",
  completed: "bg-slate-200 text-slate-700",
  ended: "bg-slate-200 text-slate-700",
  failed: "bg-rose-100 text-rose-800",
};

export function Badge({ value, testid }: { value: string | null | undefined; testid?: string }) {
  const v = value ?? "—";
  return (
    <span
      data-testid={testid}
      className={`inline-block whitespace-nowrap rounded px-2 py-0.5 text-xs font-medium ${
        STATE_COLOURS[v] ?? "bg-slate-100 text-slate-700"
      }`}
    >
      {v.replace(/_/g, " ")}
    </span>
  );
}

export function ErrorNote({ error }: { error: string | null }) {
  if (!error) return null;
  return (
    <div data-testid="error" className="mb-3 rounded bg-rose-50 px-3 py-2 text-sm text-rose-800">
      {error}
    </div>
  );
}
