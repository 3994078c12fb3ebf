// The sales view: escalations ringing now (claim it: "ring me next"; pass: "not me"), the
// signed-in person's on-duty toggle, who else is on duty, and today's finished escalations.
import { useState } from "react";
import { ApiError, api, getStaff, saveStaff } from "../api";
import { Badge, ReconnectBanner, clock } from "../components";
import { useSalesFeed } from "../salesFeed";
import type { Escalation, Staff } from "../types";

interface ActionReply {
  accepted: boolean;
  detail: string;
}

function EscalationRow({ e, onDone }: { e: Escalation; onDone: (text: string) => void }) {
  const [busy, setBusy] = useState<"claim" | "pass" | null>(null);
  const act = async (action: "claim" | "pass") => {
    setBusy(action);
    try {
      const reply = await api<ActionReply>(
        `/api/escalations/${encodeURIComponent(e.session_id)}/${action}`,
        { method: "POST" },
      );
      onDone(
        `${action === "claim" ? "Claim" : "Pass"}: ${reply.accepted ? "accepted" : "not accepted"} — ${reply.detail}`,
      );
    } catch (err) {
      onDone(
        err instanceof ApiError && err.status === 409
          ? "That escalation is no longer ringing."
          : `Could not ${action}: ${err instanceof Error ? err.message : String(err)}`,
      );
    } finally {
      setBusy(null);
    }
  };
  return (
    <li
      data-testid="escalation-row"
      data-session-id={e.session_id}
      data-status={e.status}
      className="flex items-center gap-3 border-t border-slate-100 px-3 py-3 first:border-t-0"
    >
      <span className="relative flex h-3 w-3">
        <span className="absolute inline-flex h-full w-full animate-ping rounded-full bg-amber-400 opacity-75" />
        <span className="relative inline-flex h-3 w-3 rounded-full bg-amber-500" />
      </span>
      <div className="flex-1">
        <a
          href={`#/calls/${encodeURIComponent(e.session_id)}`}
          className="font-medium text-sky-700 hover:underline"
        >
          {e.customer_name ?? "Unknown caller"}
        </a>{" "}
        <span className="text-xs text-slate-500">{e.caller ?? ""}</span>
        <div className="text-sm text-slate-600">
          {e.reason_text ?? e.reason ?? "Asked for a person"}
        </div>
        <div className="text-xs text-slate-500" data-testid="escalation-ringing">
          <Badge value={e.status} /> {e.staff_name ?? ""} · attempt {e.attempt}
        </div>
      </div>
      <button
        type="button"
        data-testid="claim-button"
        disabled={busy !== null}
        onClick={() => void act("claim")}
        className="rounded bg-emerald-600 px-3 py-1.5 text-sm font-medium text-white hover:bg-emerald-700 disabled:opacity-50"
      >
        {busy === "claim" ? "Claiming…" : "Claim — ring me"}
      </button>
      <button
        type="button"
        data-testid="pass-button"
        disabled={busy !== null}
        onClick={() => void act("pass")}
        className="rounded border border-slate-300 px-3 py-1.5 text-sm hover:bg-slate-50 disabled:opacity-50"
      >
        {busy === "pass" ? "Passing…" : "Pass"}
      </button>
    </li>
  );
}

function DutyToggle() {
  const feed = useSalesFeed();
  const me = getStaff();
  const current = feed.staff.find((s) => s.id === me?.id) ?? me;
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  if (!current) return null;
  const toggle = async () => {
    setBusy(true);
    setError(null);
    try {
      const updated = await api<Staff>("/api/staff/me/duty", {
        method: "PUT",
        body: JSON.stringify({ on_duty: !current.on_duty }),
      });
      saveStaff(updated);
      feed.setStaffMember(updated);
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <div className="flex items-center gap-3">
      <span className="text-sm text-slate-600">You are</span>
      <button
        type="button"
        role="switch"
        aria-checked={current.on_duty}
        data-testid="duty-toggle"
        data-on-duty={String(current.on_duty)}
        disabled={busy}
        onClick={() => void toggle()}
        className={`rounded-full px-4 py-1.5 text-sm font-medium text-white disabled:opacity-50 ${
          current.on_duty ? "bg-emerald-600" : "bg-slate-400"
        }`}
      >
        {current.on_duty ? "On duty" : "Off duty"}
      </button>
      {error && <span className="text-sm text-rose-700">{error}</span>}
    </div>
  );
}

export default function SalesView() {
  const feed = useSalesFeed();
  const [message, setMessage] = useState<string | null>(null);
  const ringing = feed.escalations.filter((e) => !e.final);
  const finished = feed.escalations.filter((e) => e.final);

  return (
    <section className="space-y-4">
      <ReconnectBanner socket={feed.socket} />
      <div className="flex items-center">
        <h1 className="text-xl font-semibold">Sales</h1>
        <div className="ml-auto">
          <DutyToggle />
        </div>
      </div>
      {message && (
        <div
          data-testid="action-result"
          className="rounded bg-sky-50 px-3 py-2 text-sm text-sky-900"
        >
          {message}
        </div>
      )}
      <div className="rounded-lg bg-white shadow">
        <h2 className="border-b border-slate-100 px-3 py-2 font-medium">Ringing now</h2>
        {ringing.length === 0 ? (
          <p className="px-3 py-4 text-sm text-slate-500" data-testid="no-escalations">
            Nobody is waiting for a person.
          </p>
        ) : (
          <ul data-testid="ringing-escalations">
            {ringing.map((e) => (
              <EscalationRow key={e.session_id} e={e} onDone={setMessage} />
            ))}
          </ul>
        )}
      </div>
      <div className="grid gap-4 md:grid-cols-2">
        <div className="rounded-lg bg-white shadow">
          <h2 className="border-b border-slate-100 px-3 py-2 font-medium">Team (hunt order)</h2>
          <ul className="text-sm" data-testid="staff-list">
            {[...feed.staff]
              .sort((a, b) => a.hunt_order - b.hunt_order)
              .map((s) => (
                <li
                  key={s.id}
                  data-testid="staff-row"
                  data-on-duty={String(s.on_duty)}
                  className="flex px-3 py-1.5"
                >
                  <span className="w-6 text-slate-400">{s.hunt_order}</span>
                  <span className="flex-1">
                    {s.name} <span className="text-xs text-slate-500">{s.role}</span>
                  </span>
                  <span className={s.on_duty ? "text-emerald-700" : "text-slate-400"}>
                    {s.on_duty ? "on duty" : "off"}
                  </span>
                </li>
              ))}
          </ul>
        </div>
        <div className="rounded-lg bg-white shadow">
          <h2 className="border-b border-slate-100 px-3 py-2 font-medium">Finished today</h2>
          <ul className="text-sm" data-testid="finished-escalations">
            {finished.length === 0 && <li className="px-3 py-2 text-slate-500">None yet.</li>}
            {finished.map((e) => (
              <li
                key={e.session_id}
                data-testid="finished-escalation-row"
                className="flex items-center gap-2 px-3 py-1.5"
              >
                <span className="whitespace-nowrap text-slate-500">{clock(e.updated_at)}</span>
                <span className="flex-1">{e.customer_name ?? e.caller ?? "Unknown caller"}</span>
                <Badge value={e.status} />
                <span className="text-slate-500">{e.staff_name ?? ""}</span>
              </li>
            ))}
          </ul>
        </div>
      </div>
    </section>
  );
}
