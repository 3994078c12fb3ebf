// Per-turn latency as stacked bars by stage (plain SVG), from `latency` events' stages_ms.
// "total" is the sum the stages already show, so it is the bar's label, not a segment.

export interface LatencyTurn {
  turn_id: string;
  stages_ms: Record<string, number>;
}

export const STAGES: { key: string; label: string; colour: string }[] = [
  { key: "endpointing", label: "endpointing", colour: "#94a3b8" },
  { key: "stt", label: "STT", colour: "#38bdf8" },
  { key: "llm_first_token", label: "LLM first token", colour: "#a78bfa" },
  { key: "first_sentence", label: "first sentence", colour: "#f472b6" },
  { key: "tts_first_audio", label: "TTS first audio", colour: "#fb923c" },
  { key: "to_first_media", label: "to first media", colour: "#4ade80" },
  { key: "greeting", label: "greeting", colour: "#facc15" },
];

const HEIGHT = 180;
const BAR = 28;
const GAP = 12;
const LEFT = 44;

function segments(turn: LatencyTurn) {
  const stages = turn.stages_ms;
  // A greeting turn (no caller speech, so no "total") is one span, stream start to first
  // media; its inner stages overlap it. A caller turn is its stages, stacked.
  const greetingOnly = stages.total === undefined && stages.greeting !== undefined;
  return STAGES.filter((s) => (greetingOnly ? s.key === "greeting" : s.key !== "greeting"))
    .map((s) => ({ ...s, ms: Number(stages[s.key] ?? 0) }))
    .filter((s) => s.ms > 0);
}

export default function LatencyChart({ turns }: { turns: LatencyTurn[] }) {
  if (turns.length === 0) {
    return <p className="text-sm text-slate-500">No turns measured yet.</p>;
  }
  const totals = turns.map((t) => segments(t).reduce((sum, s) => sum + s.ms, 0));
  const max = Math.max(500, ...totals);
  const width = LEFT + turns.length * (BAR + GAP) + GAP;
  const scale = (ms: number) => (ms / max) * (HEIGHT - 20);
  const ticks = [0, max / 2, max];

  return (
    <div data-testid="latency-chart">
      <svg width={width} height={HEIGHT + 20} role="img" aria-label="Latency per turn by stage">
        {ticks.map((t) => (
          <g key={t}>
            <line
              x1={LEFT - 4}
              x2={width}
              y1={HEIGHT - scale(t)}
              y2={HEIGHT - scale(t)}
              stroke="#e2e8f0"
            />
            <text
              x={LEFT - 6}
              y={HEIGHT - scale(t) + 4}
              fontSize="10"
              textAnchor="end"
              fill="#64748b"
            >
              {t >= 1000 ? `${(t / 1000).toFixed(1)}s` : `${Math.round(t)}ms`}
            </text>
          </g>
        ))}
        {turns.map((turn, i) => {
          const x = LEFT + GAP + i * (BAR + GAP);
          let y = HEIGHT;
          return (
            <g key={turn.turn_id} data-testid="latency-bar" data-turn-id={turn.turn_id}>
              {segments(turn).map((s) => {
                const h = scale(s.ms);
                y -= h;
                return (
                  <rect key={s.key} x={x} y={y} width={BAR} height={h} fill={s.colour}>
                    <title>{`${s.label}: ${Math.round(s.ms)} ms`}</title>
                  </rect>
                );
              })}
              <text
                x={x + BAR / 2}
                y={HEIGHT + 14}
                fontSize="10"
                textAnchor="middle"
                fill="#64748b"
              >
                {i + 1}
              </text>
              <text x={x + BAR / 2} y={y - 3} fontSize="9" textAnchor="middle" fill="#334155">
                {Math.round(totals[i])}
              </text>
            </g>
          );
        })}
      </svg>
      <div className="mt-2 flex flex-wrap gap-3 text-xs text-slate-600">
        {STAGES.map((s) => (
          <span key={s.key} className="flex items-center gap-1">
            <span
              className="inline-block h-2.5 w-2.5 rounded-sm"
              style={{ background: s.colour }}
            />
            {s.label}
          </span>
        ))}
      </div>
    </div>
  );
}
