// One editable table of the admin area: rows shown as text, "Edit" turns a row into inputs
// (only the fields changed are sent), "Delete" asks once more, and a form below adds a
// row. Every input has a label a screen reader reads ("Price from for Tire Rotation");
// the server's answer to a refused change is shown above the table.
import { useState } from "react";
import type { FormEvent, ReactNode } from "react";
import { ErrorNote } from "../components";

export type Kind =
  | "text"
  | "textarea"
  | "number"
  | "money"
  | "bool"
  | "time"
  | "date"
  | "select"
  | "list"
  | "multi";

export interface Column {
  key: string; // the API's field
  label: string;
  kind: Kind;
  options?: { value: string; label: string }[]; // select, multi
  readOnly?: boolean;
  placeholder?: string;
}

export type Row = Record<string, unknown> & { id: number };
type FormValue = string | boolean | string[];
export type Form = Record<string, FormValue>;

function toForm(col: Column, value: unknown): FormValue {
  switch (col.kind) {
    case "bool":
      return Boolean(value);
    case "money":
      return typeof value === "number" ? (value / 100).toFixed(2) : "";
    case "list":
      return Array.isArray(value) ? value.join("; ") : "";
    case "multi":
      return Array.isArray(value) ? value.map(String) : [];
    default:
      return value === null || value === undefined ? "" : String(value);
  }
}

/** The form's value as the API takes it; an Error that names the field for bad input. */
function fromForm(col: Column, value: FormValue): unknown {
  const text = typeof value === "string" ? value.trim() : "";
  switch (col.kind) {
    case "bool":
      return Boolean(value);
    case "money": {
      if (!/^\d+(\.\d{1,2})?$/.test(text.replace(/^\$/, "")))
        throw new Error(`${col.label}: enter an amount in dollars, like 49.95`);
      return Math.round(parseFloat(text.replace(/^\$/, "")) * 100);
    }
    case "number":
      if (!/^-?\d+$/.test(text)) throw new Error(`${col.label}: enter a whole number`);
      return parseInt(text, 10);
    case "list":
      return text
        .split(/[;,]/)
        .map((t) => t.trim())
        .filter(Boolean);
    case "multi":
      return (value as string[]).map(Number);
    case "time":
      return text === "" ? null : text.slice(0, 5);
    default:
      return text;
  }
}

function shown(col: Column, value: unknown): ReactNode {
  if (value === null || value === undefined || value === "") return "—";
  switch (col.kind) {
    case "bool":
      return value ? "yes" : "no";
    case "money":
      return `$${((value as number) / 100).toFixed(2)}`;
    case "list":
      return (value as string[]).join(", ") || "—";
    case "multi": {
      const names = (value as number[]).map(
        (v) => col.options?.find((o) => o.value === String(v))?.label ?? String(v),
      );
      return names.join(", ") || "—";
    }
    case "select":
      return col.options?.find((o) => o.value === String(value))?.label ?? String(value);
    default:
      return String(value);
  }
}

export function emptyForm(columns: Column[], defaults: Form = {}): Form {
  const form: Form = {};
  for (const col of columns) form[col.key] = toForm(col, undefined);
  return { ...form, ...defaults };
}

function Field({
  col,
  value,
  label,
  testid,
  onChange,
}: {
  col: Column;
  value: FormValue;
  label: string;
  testid: string;
  onChange: (v: FormValue) => void;
}) {
  const cls = "w-full rounded border border-slate-300 px-1.5 py-1 text-sm";
  if (col.kind === "bool")
    return (
      <input
        type="checkbox"
        aria-label={label}
        data-testid={testid}
        checked={value as boolean}
        onChange={(e) => onChange(e.target.checked)}
      />
    );
  if (col.kind === "multi") {
    const chosen = value as string[];
    return (
      <fieldset data-testid={testid} className="space-y-0.5 text-xs">
        <legend className="sr-only">{label}</legend>
        {(col.options ?? []).map((o) => (
          <label key={o.value} className="flex items-center gap-1 whitespace-nowrap">
            <input
              type="checkbox"
              checked={chosen.includes(o.value)}
              onChange={(e) =>
                onChange(
                  e.target.checked ? [...chosen, o.value] : chosen.filter((v) => v !== o.value),
                )
              }
            />
            {o.label}
          </label>
        ))}
      </fieldset>
    );
  }
  if (col.kind === "select")
    return (
      <select
        aria-label={label}
        data-testid={testid}
        value={value as string}
        onChange={(e) => onChange(e.target.value)}
        className={cls}
      >
        {(col.options ?? []).map((o) => (
          <option key={o.value} value={o.value}>
            {o.label}
          </option>
        ))}
      </select>
    );
  if (col.kind === "textarea")
    return (
      <textarea
        aria-label={label}
        data-testid={testid}
        value={value as string}
        rows={3}
        onChange={(e) => onChange(e.target.value)}
        className={cls}
      />
    );
  const type = col.kind === "time" || col.kind === "date" ? col.kind : "text";
  return (
    <input
      type={type}
      aria-label={label}
      data-testid={testid}
      value={value as string}
      placeholder={col.placeholder}
      inputMode={col.kind === "money" || col.kind === "number" ? "decimal" : undefined}
      onChange={(e) => onChange(e.target.value)}
      className={cls}
    />
  );
}

// The add form's field widths (the rest: w-40).
const WIDTHS: Partial<Record<Kind, string>> = { textarea: "w-72", multi: "w-60", bool: "w-20" };

export interface TableProps {
  entity: string; // "service": test ids (service-row, service-save) and labels
  title: string;
  columns: Column[];
  rows: Row[];
  rowName: (row: Row) => string;
  onSave: (row: Row, changes: Record<string, unknown>) => Promise<unknown>;
  onAdd?: (values: Record<string, unknown>) => Promise<unknown>;
  onDelete?: (row: Row) => Promise<unknown>;
  addDefaults?: Form;
  note?: ReactNode;
}

export default function AdminTable(props: TableProps) {
  const { entity, columns, rows, rowName } = props;
  const [editing, setEditing] = useState<number | null>(null);
  const [form, setForm] = useState<Form>({});
  const [confirming, setConfirming] = useState<number | null>(null);
  const [adding, setAdding] = useState<Form>(() => emptyForm(columns, props.addDefaults));
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const run = async (work: () => Promise<unknown>): Promise<boolean> => {
    setBusy(true);
    setError(null);
    try {
      await work();
      return true;
    } catch (err) {
      const text = err instanceof Error ? err.message : String(err);
      // The API names fields by their keys (`price_min_cents: …`): say the column's label.
      const label = (key: string) => columns.find((c) => c.key === key)?.label ?? key;
      setError(
        text.replace(/(^|; )(\w+):/g, (_m, sep: string, key: string) => `${sep}${label(key)}:`),
      );
      return false;
    } finally {
      setBusy(false);
    }
  };

  const edit = (row: Row) => {
    setConfirming(null);
    setEditing(row.id);
    setForm(Object.fromEntries(columns.map((c) => [c.key, toForm(c, row[c.key])])));
  };

  const save = async (row: Row) => {
    const ok = await run(async () => {
      const changes: Record<string, unknown> = {};
      for (const col of columns) {
        if (col.readOnly) continue;
        const before = JSON.stringify(toForm(col, row[col.key]));
        if (JSON.stringify(form[col.key]) !== before)
          changes[col.key] = fromForm(col, form[col.key]);
      }
      if (Object.keys(changes).length > 0) await props.onSave(row, changes);
    });
    if (ok) setEditing(null);
  };

  const add = async (event: FormEvent) => {
    event.preventDefault();
    const onAdd = props.onAdd;
    if (!onAdd) return;
    const ok = await run(async () => {
      const values: Record<string, unknown> = {};
      for (const col of columns) {
        const raw = adding[col.key];
        if (col.readOnly || raw === "") continue;
        values[col.key] = fromForm(col, raw);
      }
      await onAdd(values);
    });
    if (ok) setAdding(emptyForm(columns, props.addDefaults));
  };

  const remove = async (row: Row) => {
    const onDelete = props.onDelete;
    if (onDelete && (await run(() => onDelete(row)))) setConfirming(null);
  };

  return (
    <section className="space-y-2" data-testid={`${entity}-table`}>
      <h2 className="text-lg font-semibold">{props.title}</h2>
      {props.note}
      <div role="alert" data-testid={`${entity}-error`}>
        <ErrorNote error={error} />
      </div>
      <div className="overflow-x-auto rounded-lg bg-white shadow">
        <table className="w-full text-sm" aria-label={props.title}>
          <thead className="bg-slate-50 text-left text-slate-500">
            <tr>
              {columns.map((c) => (
                <th key={c.key} scope="col" className="px-2 py-2">
                  {c.label}
                </th>
              ))}
              <th scope="col" className="px-2 py-2">
                <span className="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {rows.map((row) => (
              <tr
                key={row.id}
                data-testid={`${entity}-row`}
                data-id={row.id}
                className="border-t border-slate-100 align-top"
              >
                {columns.map((c) => (
                  <td key={c.key} className="px-2 py-1.5" data-field={c.key}>
                    {editing === row.id && !c.readOnly ? (
                      <Field
                        col={c}
                        value={form[c.key]}
                        label={`${c.label} for ${rowName(row)}`}
                        testid={`${entity}-${c.key}`}
                        onChange={(v) => setForm({ ...form, [c.key]: v })}
                      />
                    ) : (
                      shown(c, row[c.key])
                    )}
                  </td>
                ))}
                <td className="whitespace-nowrap px-2 py-1.5 text-right">
                  <RowActions
                    entity={entity}
                    name={rowName(row)}
                    editing={editing === row.id}
                    confirming={confirming === row.id}
                    busy={busy}
                    canDelete={props.onDelete !== undefined}
                    onEdit={() => edit(row)}
                    onSave={() => save(row)}
                    onCancel={() => setEditing(null)}
                    onDelete={() => setConfirming(row.id)}
                    onConfirm={() => remove(row)}
                    onKeep={() => setConfirming(null)}
                  />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {props.onAdd && (
        <form
          onSubmit={add}
          data-testid={`${entity}-add`}
          aria-label={`Add ${entity}`}
          className="flex flex-wrap items-end gap-2 rounded-lg bg-white p-3 shadow"
        >
          <h3 className="w-full text-sm font-medium text-slate-600">Add {entity}</h3>
          {columns
            .filter((c) => !c.readOnly)
            .map((c) => (
              <div key={c.key} className={WIDTHS[c.kind] ?? "w-40"}>
                <div className="text-xs text-slate-500" aria-hidden="true">
                  {c.label}
                </div>
                <Field
                  col={c}
                  value={adding[c.key]}
                  label={`New ${entity} ${c.label.toLowerCase()}`}
                  testid={`new-${entity}-${c.key}`}
                  onChange={(v) => setAdding({ ...adding, [c.key]: v })}
                />
              </div>
            ))}
          <button
            type="submit"
            disabled={busy}
            data-testid={`${entity}-add-submit`}
            className="rounded bg-slate-800 px-3 py-1.5 text-sm text-white disabled:opacity-50"
          >
            Add {entity}
          </button>
        </form>
      )}
    </section>
  );
}

function RowActions(p: {
  entity: string;
  name: string;
  editing: boolean;
  confirming: boolean;
  busy: boolean;
  canDelete: boolean;
  onEdit: () => void;
  onSave: () => void;
  onCancel: () => void;
  onDelete: () => void;
  onConfirm: () => void;
  onKeep: () => void;
}) {
  const btn = "rounded border px-2 py-0.5 text-xs disabled:opacity-50";
  const b = (id: string, label: string, aria: string, onClick: () => void, extra = "") => (
    <button
      type="button"
      data-testid={`${p.entity}-${id}`}
      aria-label={`${aria} ${p.name}`}
      disabled={p.busy}
      onClick={onClick}
      className={`${btn} ${extra}`}
    >
      {label}
    </button>
  );
  if (p.editing)
    return (
      <span className="space-x-1">
        {b("save", "Save", "Save", p.onSave, "bg-slate-800 text-white")}
        {b("cancel", "Cancel", "Cancel editing", p.onCancel)}
      </span>
    );
  if (p.confirming)
    return (
      <span className="space-x-1">
        {b(
          "confirm-delete",
          "Really delete",
          "Really delete",
          p.onConfirm,
          "bg-rose-700 text-white",
        )}
        {b("keep", "Keep", "Keep", p.onKeep)}
      </span>
    );
  return (
    <span className="space-x-1">
      {b("edit", "Edit", "Edit", p.onEdit)}
      {p.canDelete && b("delete", "Delete", "Delete", p.onDelete, "text-rose-700")}
    </span>
  );
}
