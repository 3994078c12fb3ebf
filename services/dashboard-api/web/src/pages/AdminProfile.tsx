// The dealership's profile: name, address, phone, timezone, the service desk's email and
// the assistant callers talk to (name, persona, Kokoro voice). The greeting and the prompt
// of the next call use it.
import { useEffect, useState } from "react";
import type { FormEvent } from "react";
import { api, send } from "../api";
import { ErrorNote } from "../components";
import type { Profile } from "../types";

const FIELDS: { key: keyof Profile; label: string; hint?: string; long?: boolean }[] = [
  { key: "name", label: "Dealership name" },
  { key: "address", label: "Address" },
  { key: "phone", label: "Phone", hint: "e.g. +1 415 555 0100" },
  { key: "timezone", label: "Timezone", hint: "IANA name, e.g. America/Los_Angeles" },
  { key: "service_desk_email", label: "Service desk email" },
  { key: "assistant_name", label: "Assistant's name", hint: "she introduces herself with it" },
  { key: "persona", label: "Persona", hint: "tone and style, added to the prompt", long: true },
  { key: "voice", label: "Voice", hint: "a Kokoro voice id, e.g. af_heart; empty: default" },
];

type Values = Record<keyof Profile, string>;

function toValues(p: Profile): Values {
  const out = {} as Values;
  for (const f of FIELDS) out[f.key] = p[f.key] ?? "";
  return out;
}

export default function AdminProfile() {
  const [saved, setSaved] = useState<Values | null>(null);
  const [values, setValues] = useState<Values | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [status, setStatus] = useState<string | null>(null);

  useEffect(() => {
    api<Profile>("/api/admin/profile")
      .then((p) => {
        setSaved(toValues(p));
        setValues(toValues(p));
      })
      .catch((err: unknown) => setError(err instanceof Error ? err.message : String(err)));
  }, []);

  const save = async (event: FormEvent) => {
    event.preventDefault();
    if (!values || !saved) return;
    const changes = Object.fromEntries(
      FIELDS.filter((f) => values[f.key] !== saved[f.key]).map((f) => [f.key, values[f.key]]),
    );
    setError(null);
    setStatus(null);
    try {
      const p = await send<Profile>("PATCH", "/api/admin/profile", changes);
      setSaved(toValues(p));
      setValues(toValues(p));
      setStatus("Saved. The next call uses it.");
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    }
  };

  return (
    <form
      onSubmit={save}
      data-testid="profile-form"
      aria-label="Dealership profile"
      className="max-w-2xl space-y-3 rounded-lg bg-white p-4 shadow"
    >
      <h2 className="text-lg font-semibold">Dealership</h2>
      <div role="alert" data-testid="profile-error">
        <ErrorNote error={error} />
      </div>
      {values &&
        FIELDS.map((f) => (
          <label key={f.key} className="block text-sm">
            {f.label}
            {f.long ? (
              <textarea
                data-testid={`profile-${f.key}`}
                value={values[f.key]}
                rows={3}
                onChange={(e) => setValues({ ...values, [f.key]: e.target.value })}
                className="mt-1 w-full rounded border border-slate-300 px-2 py-1.5"
              />
            ) : (
              <input
                data-testid={`profile-${f.key}`}
                value={values[f.key]}
                onChange={(e) => setValues({ ...values, [f.key]: e.target.value })}
                className="mt-1 w-full rounded border border-slate-300 px-2 py-1.5"
              />
            )}
            {f.hint && <span className="text-xs text-slate-500">{f.hint}</span>}
          </label>
        ))}
      <div className="flex items-center gap-3">
        <button
          type="submit"
          data-testid="profile-save"
          className="rounded bg-slate-800 px-4 py-1.5 text-sm text-white"
        >
          Save
        </button>
        {status && (
          <span role="status" data-testid="profile-status" className="text-sm text-emerald-700">
            {status}
          </span>
        )}
      </div>
    </form>
  );
}
