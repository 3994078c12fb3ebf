// Call history with search (caller name, phone digits, summary and transcript text).
import { useEffect, useState } from "react";
import type { FormEvent } from "react";
import { api } from "../api";
import { Badge, ErrorNote, dateTime, duration } from "../components";
import type { CallSummary } from "../types";

const PAGE = 50;

export default function History() {
  const [query, setQuery] = useState("");
  const [q, setQ] = useState("");
  const [offset, setOffset] = useState(0);
  const [items, setItems] = useState<CallSummary[]>([]);
  const [total, setTotal] = useState(0);
  const [error, setError] = useState<string | null>(null);
  const [loading, setLoading] = useState(true);

  useEffect(() => {
    let cancelled = false;
    setLoading(true);
    const params = new URLSearchParams({ q, limit: String(PAGE), offset: String(offset) });
    api<{ items: CallSummary[]; total: number }>(`/api/calls?${params}`)
      .then((page) => {
        if (cancelled) return;
        setItems(page.items);
        setTotal(page.total);
        setError(null);
      })
      .catch(
        (err: unknown) => !cancelled && setError(err instanceof Error ? err.message : String(err)),
      )
      .finally(() => !cancelled && setLoading(false));
    return () => {
      cancelled = true;
    };
  }, [q, offset]);

  const search = (event: FormEvent) => {
    event.preventDefault();
    setOffset(0);
    setQ(query.trim());
  };

  return (
    <section className="space-y-3">
      <h1 className="text-xl font-semibold">Call history</h1>
      <form onSubmit={search} className="flex gap-2" data-testid="history-search">
        <input
          data-testid="history-query"
          value={query}
          onChange={(e) => setQuery(e.target.value)}
          placeholder="Name, phone digits, or words said"
          className="flex-1 rounded border border-slate-300 px-2 py-1.5 text-sm"
        />
        <button type="submit" className="rounded bg-slate-800 px-4 py-1.5 text-sm text-white">
          Search
        </button>
      </form>
      <ErrorNote error={error} />
      <div className="overflow-hidden rounded-lg bg-white shadow">
        <table className="w-full text-sm" data-testid="history-table">
          <thead className="bg-slate-50 text-left text-slate-500">
            <tr>
              <th className="px-3 py-2">When</th>
              <th className="px-3 py-2">Caller</th>
              <th className="px-3 py-2">Duration</th>
              <th className="px-3 py-2">Outcome</th>
              <th className="px-3 py-2">Summary</th>
            </tr>
          </thead>
          <tbody>
            {!loading && items.length === 0 && (
              <tr>
                <td colSpan={5} className="px-3 py-6 text-center text-slate-500">
                  No calls found.
                </td>
              </tr>
            )}
            {items.map((c) => (
              <tr
                key={c.session_id}
                data-testid="history-row"
                className="border-t border-slate-100 align-top"
              >
                <td className="whitespace-nowrap px-3 py-2">{dateTime(c.started_at)}</td>
                <td className="px-3 py-2">
                  <a
                    href={`#/calls/${encodeURIComponent(c.session_id)}`}
                    className="text-sky-700 hover:underline"
                  >
                    {c.customer_name ?? "Unknown caller"}
                  </a>
                  <div className="text-xs text-slate-500">{c.caller ?? ""}</div>
                </td>
                <td className="px-3 py-2 tabular-nums">{duration(c.duration_s)}</td>
                <td className="px-3 py-2">
                  <Badge value={c.outcome} />
                </td>
                <td className="px-3 py-2 text-slate-600">{c.summary ?? ""}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <div className="flex items-center gap-3 text-sm text-slate-600">
        <span data-testid="history-total">
          {total === 0 ? "0 calls" : `${offset + 1}–${Math.min(offset + PAGE, total)} of ${total}`}
        </span>
        <button
          type="button"
          disabled={offset === 0}
          onClick={() => setOffset(Math.max(0, offset - PAGE))}
          className="rounded border px-2 py-1 disabled:opacity-40"
        >
          Previous
        </button>
        <button
          type="button"
          disabled={offset + PAGE >= total}
          onClick={() => setOffset(offset + PAGE)}
          className="rounded border px-2 py-1 disabled:opacity-40"
        >
          Next
        </button>
      </div>
    </section>
  );
}
