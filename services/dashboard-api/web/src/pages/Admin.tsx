// The admin area (managers only; the API answers 403 to anyone else): the dealership's
// profile, opening hours, holidays, bays, services, staff and FAQ. Every change is written
// to the database at once, so the agent uses it on its next call.
import { useCallback, useEffect, useState } from "react";
import type { ReactNode } from "react";
import { api, send } from "../api";
import { ErrorNote } from "../components";
import type { AdminStaff, Bay, Hours } from "../types";
import AdminProfile from "./AdminProfile";
import AdminTable from "./AdminTable";
import type { Column, Form, Row } from "./AdminTable";

export const SECTIONS: [string, string][] = [
  ["profile", "Dealership"],
  ["hours", "Opening hours"],
  ["holidays", "Holidays"],
  ["bays", "Bays"],
  ["services", "Services"],
  ["staff", "Staff"],
  ["faq", "FAQ"],
];

export function useRows<T>(path: string): {
  rows: T[];
  reload: () => Promise<void>;
  error: string | null;
} {
  const [rows, setRows] = useState<T[]>([]);
  const [error, setError] = useState<string | null>(null);
  const reload = useCallback(async () => {
    try {
      setRows(await api<T[]>(path));
      setError(null);
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    }
  }, [path]);
  useEffect(() => {
    void reload();
  }, [reload]);
  return { rows, reload, error };
}

interface CrudProps {
  path: string;
  entity: string;
  title: string;
  columns: Column[];
  rowName: (row: Row) => string;
  addDefaults?: Form;
  note?: ReactNode;
  onChanged?: () => void;
}

function Crud(props: CrudProps) {
  const { path, onChanged } = props;
  const { rows, reload, error } = useRows<Row>(path);
  const after = async () => {
    await reload();
    onChanged?.();
  };
  return (
    <>
      <ErrorNote error={error} />
      <AdminTable
        {...props}
        rows={rows}
        onSave={async (row, changes) => {
          await send("PATCH", `${path}/${row.id}`, changes);
          await after();
        }}
        onAdd={async (values) => {
          await send("POST", path, values);
          await after();
        }}
        onDelete={async (row) => {
          await send("DELETE", `${path}/${row.id}`);
          await after();
        }}
      />
    </>
  );
}

const HOURS: Column[] = [
  { key: "day", label: "Day", kind: "text", readOnly: true },
  { key: "closed", label: "Closed", kind: "bool" },
  { key: "opens_at", label: "Opens", kind: "time" },
  { key: "closes_at", label: "Closes", kind: "time" },
];

function HoursSection() {
  const { rows, reload, error } = useRows<Hours>("/api/admin/hours");
  const byDay: Row[] = rows.map((h) => ({ ...h, id: h.weekday }));
  return (
    <>
      <ErrorNote error={error} />
      <AdminTable
        entity="hours"
        title="Opening hours"
        note={<p className="text-sm text-slate-500">Dealership local time; one opening a day.</p>}
        columns={HOURS}
        rows={byDay}
        rowName={(r) => String(r.day)}
        onSave={async (row, changes) => {
          const { closed, opens_at, closes_at } = { ...row, ...changes };
          await send("PUT", `/api/admin/hours/${row.id}`, { closed, opens_at, closes_at });
          await reload();
        }}
      />
    </>
  );
}

const ROLES = ["sales", "service", "manager"].map((r) => ({ value: r, label: r }));

const STAFF: Column[] = [
  { key: "name", label: "Name", kind: "text" },
  { key: "phone", label: "Phone", kind: "text", placeholder: "+1 415 555 0100" },
  { key: "role", label: "Role", kind: "select", options: ROLES },
  { key: "email", label: "Email", kind: "text" },
  { key: "on_duty", label: "On duty", kind: "bool" },
  { key: "hunt_order", label: "Hunt order", kind: "number" },
  { key: "has_login", label: "Can sign in", kind: "bool", readOnly: true },
];

function ServicesSection() {
  const bays = useRows<Bay>("/api/admin/bays");
  const options = bays.rows.map((b) => ({ value: String(b.id), label: b.name }));
  const columns: Column[] = [
    { key: "name", label: "Name", kind: "text" },
    { key: "description", label: "Description", kind: "textarea" },
    { key: "duration_minutes", label: "Minutes", kind: "number" },
    { key: "price_min_cents", label: "Lowest price", kind: "money", placeholder: "49.95" },
    { key: "price_max_cents", label: "Highest price", kind: "money", placeholder: "69.95" },
    { key: "bay_ids", label: "Bays", kind: "multi", options },
    { key: "active", label: "Bookable", kind: "bool" },
  ];
  return (
    <Crud
      key={options.length} // the bay checkboxes follow the bays
      path="/api/admin/services"
      entity="service"
      title="Services"
      note={
        <p className="text-sm text-slate-500">
          A service with appointments cannot be deleted: untick “Bookable” instead.
        </p>
      }
      columns={columns}
      rowName={(r) => String(r.name)}
      addDefaults={{ active: true }}
    />
  );
}

function Section({ section }: { section: string }) {
  switch (section) {
    case "hours":
      return <HoursSection />;
    case "holidays":
      return (
        <Crud
          path="/api/admin/holidays"
          entity="holiday"
          title="Holidays (closed all day)"
          columns={[
            { key: "date", label: "Date", kind: "date" },
            { key: "name", label: "Name", kind: "text" },
          ]}
          rowName={(r) => `${String(r.name)} (${String(r.date)})`}
        />
      );
    case "bays":
      return (
        <Crud
          path="/api/admin/bays"
          entity="bay"
          title="Service bays"
          columns={[
            { key: "name", label: "Name", kind: "text" },
            { key: "capacity", label: "Jobs at once", kind: "number" },
            { key: "services", label: "Services", kind: "list", readOnly: true },
          ]}
          rowName={(r) => String(r.name)}
          addDefaults={{ capacity: "1" }}
        />
      );
    case "services":
      return <ServicesSection />;
    case "staff":
      return (
        <Crud
          path="/api/admin/staff"
          entity="staff"
          title="Staff"
          note={
            <p className="text-sm text-slate-500">
              Calls are handed to people on duty, lowest hunt order first. A dashboard login is
              given with <code>set-password</code>.
            </p>
          }
          columns={STAFF}
          rowName={(r) => String((r as unknown as AdminStaff).name)}
          addDefaults={{ role: "sales", on_duty: true, hunt_order: "100" }}
        />
      );
    case "faq":
      return (
        <Crud
          path="/api/admin/faq"
          entity="faq"
          title="Questions callers ask"
          columns={[
            { key: "question", label: "Question", kind: "text" },
            { key: "answer", label: "Answer", kind: "textarea" },
            { key: "tags", label: "Tags", kind: "list", placeholder: "hours; weekend" },
          ]}
          rowName={(r) => String(r.question)}
        />
      );
    default:
      return <AdminProfile />;
  }
}

export default function Admin({ section }: { section: string }) {
  const current = SECTIONS.some(([id]) => id === section) ? section : "profile";
  return (
    <section className="space-y-4" data-testid="admin">
      <h1 className="text-xl font-semibold">Admin</h1>
      <nav aria-label="Admin sections" className="flex flex-wrap gap-1">
        {SECTIONS.map(([id, label]) => (
          <a
            key={id}
            href={`#/admin/${id}`}
            data-testid={`admin-tab-${id}`}
            aria-current={id === current ? "page" : undefined}
            className={`rounded px-3 py-1 text-sm ${
              id === current ? "bg-slate-800 text-white" : "bg-white text-slate-700 shadow"
            }`}
          >
            {label}
          </a>
        ))}
      </nav>
      <Section key={current} section={current} />
    </section>
  );
}
