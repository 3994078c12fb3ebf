// Callback requests the agent took (every role): who asked (the phone as the API gives it,
// masked unless the viewer sees whole numbers), when, when they would like the call and
// why; "Mark done" closes one (the first who and when are kept).
import { useCallback, useEffect, useState } from "react";
import { api, send } from "../api";
import { Badge, ErrorNote, dateTime } from "../components";
import type { Callback } from "../types";

export default function Callbacks() {
  const [showDone, setShowDone] = useState(false);
  const [items, setItems] = useState<Callback[]>([]);
  const [error, setError] = useState<string | null>(null);
  const [loading, setLoading] = useState(true);

  const load = useCallback(async () => {
    try {
      setItems(await api<Callback[]>(showDone ? "/api/callbacks" : "/api/callbacks?status=open"));
      setError(null);
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    } finally {
      setLoading(false);
    }
  }, [showDone]);

  useEffect(() => {
    void load();
  }, [load]);

  const done = async (cb: Callback) => {
    try {
      await send("POST", `/api/callbacks/${cb.id}/done`);
      await load();
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    }
  };

  return (
    <section className="space-y-3" data-testid="callbacks">
      <div className="flex items-center gap-4">
        <h1 className="text-xl font-semibold">Callback requests</h1>
        <label className="flex items-center gap-1 text-sm text-slate-600">
          <input
            type="checkbox"
            data-testid="callbacks-show-done"
            checked={showDone}
            onChange={(e) => setShowDone(e.target.checked)}
          />
          Show done ones too
        </label>
      </div>
      <ErrorNote error={error} />
      <div className="overflow-hidden rounded-lg bg-white shadow">
        <table className="w-full text-sm" aria-label="Callback requests">
          <thead className="bg-slate-50 text-left text-slate-500">
            <tr>
              <th scope="col" className="px-3 py-2">
                Who
              </th>
              <th scope="col" className="px-3 py-2">
                Asked
              </th>
              <th scope="col" className="px-3 py-2">
                Call them
              </th>
              <th scope="col" className="px-3 py-2">
                Why
              </th>
              <th scope="col" className="px-3 py-2">
                Status
              </th>
              <th scope="col" className="px-3 py-2">
                <span className="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {!loading && items.length === 0 && (
              <tr>
                <td colSpan={6} className="px-3 py-6 text-center text-slate-500">
                  {showDone ? "No callback requests." : "No open callback requests."}
                </td>
              </tr>
            )}
            {items.map((cb) => (
              <tr
                key={cb.id}
                data-testid="callback-row"
                data-id={cb.id}
                data-status={cb.status}
                className="border-t border-slate-100 align-top"
              >
                <td className="px-3 py-2">
                  <div data-testid="callback-name">{cb.name ?? "Unknown caller"}</div>
                  <div data-testid="callback-phone" className="text-xs text-slate-500">
                    {cb.phone ?? ""}
                  </div>
                </td>
                <td className="whitespace-nowrap px-3 py-2">{dateTime(cb.created_at)}</td>
                <td className="px-3 py-2">{cb.preferred_window}</td>
                <td className="px-3 py-2 text-slate-700" data-testid="callback-reason">
                  {cb.reason}
                  <div>
                    <a
                      href={`#/calls/${encodeURIComponent(cb.session_id)}`}
                      className="text-xs text-sky-700 hover:underline"
                    >
                      the call
                    </a>
                  </div>
                </td>
                <td className="px-3 py-2">
                  <Badge value={cb.status} testid="callback-status" />
                  {cb.done_at && (
                    <div className="text-xs text-slate-500">
                      {cb.done_by_name ?? "someone"}, {dateTime(cb.done_at)}
                    </div>
                  )}
                </td>
                <td className="px-3 py-2 text-right">
                  {cb.status !== "done" && (
                    <button
                      type="button"
                      data-testid="callback-done"
                      aria-label={`Mark the callback to ${cb.name ?? "the caller"} done`}
                      onClick={() => void done(cb)}
                      className="rounded bg-slate-800 px-3 py-1 text-xs text-white"
                    >
                      Mark done
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </section>
  );
}
