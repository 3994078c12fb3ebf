// Live calls: caller, duration, state and who is handling each call, from the sales socket.
import { Badge, ReconnectBanner, duration } from "../components";
import { navigate } from "../router";
import { useSalesFeed } from "../salesFeed";
import { useNow } from "../useNow";

export default function LiveCalls() {
  const feed = useSalesFeed();
  const now = useNow();
  const calls = [...feed.live_calls].sort((a, b) => b.started_at - a.started_at);

  return (
    <section>
      <ReconnectBanner socket={feed.socket} />
      <h1 className="mb-3 text-xl font-semibold">Live calls</h1>
      <div className="overflow-hidden rounded-lg bg-white shadow">
        <table className="w-full text-sm" data-testid="live-calls">
          <thead className="bg-slate-50 text-left text-slate-500">
            <tr>
              <th className="px-3 py-2">Caller</th>
              <th className="px-3 py-2">Duration</th>
              <th className="px-3 py-2">State</th>
              <th className="px-3 py-2">Handled by</th>
              <th className="px-3 py-2">Escalation</th>
            </tr>
          </thead>
          <tbody>
            {calls.length === 0 && (
              <tr>
                <td
                  colSpan={5}
                  className="px-3 py-6 text-center text-slate-500"
                  data-testid="no-live-calls"
                >
                  {feed.loaded ? "No calls right now." : "Loading…"}
                </td>
              </tr>
            )}
            {calls.map((c) => {
              const seconds = c.state === "ended" ? c.duration_s : now - c.started_at;
              return (
                <tr
                  key={c.session_id}
                  data-testid="live-call-row"
                  data-session-id={c.session_id}
                  data-state={c.state}
                  onClick={() => navigate(`/calls/${encodeURIComponent(c.session_id)}`)}
                  className="cursor-pointer border-t border-slate-100 hover:bg-slate-50"
                >
                  <td className="px-3 py-2">
                    <a
                      href={`#/calls/${encodeURIComponent(c.session_id)}`}
                      data-testid="live-call-link"
                      className="font-medium text-sky-700 hover:underline"
                    >
                      {c.customer_name ?? "Unknown caller"}
                    </a>
                    <div className="text-xs text-slate-500">{c.caller ?? "—"}</div>
                  </td>
                  <td className="px-3 py-2 tabular-nums" data-testid="live-call-duration">
                    {duration(seconds)}
                  </td>
                  <td className="px-3 py-2">
                    <Badge value={c.state} testid="live-call-state" />
                  </td>
                  <td className="px-3 py-2" data-testid="live-call-handler">
                    {c.handler ?? "AI"}
                  </td>
                  <td className="px-3 py-2 text-slate-600">
                    {c.escalation
                      ? `${c.escalation.status.replace(/_/g, " ")}${
                          c.escalation.staff_name ? ` · ${c.escalation.staff_name}` : ""
                        }`
                      : "—"}
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </div>
    </section>
  );
}
