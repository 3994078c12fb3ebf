// The shell: sign-in when there is no token, otherwise the navigation bar and one page.
// Signing out (or any 401 / 4401) clears the token and shows sign-in again.
import { useEffect, useState } from "react";
import { getStaff, getToken, onSignedOut, signOut } from "./api";
import { navigate, useRoute } from "./router";
import type { Route } from "./router";
import { SalesFeedProvider } from "./salesFeed";
import type { Staff } from "./types";
import Admin from "./pages/Admin";
import CallView from "./pages/CallView";
import Callbacks from "./pages/Callbacks";
import History from "./pages/History";
import LiveCalls from "./pages/LiveCalls";
import Login from "./pages/Login";
import SalesView from "./pages/SalesView";

function NavLink({ to, label, active }: { to: string; label: string; active: boolean }) {
  return (
    <a
      href={`#${to}`}
      data-testid={`nav-${label.toLowerCase().replace(/\s+/g, "-")}`}
      className={`rounded px-3 py-1.5 text-sm ${
        active ? "bg-slate-700 text-white" : "text-slate-200 hover:bg-slate-700"
      }`}
    >
      {label}
    </a>
  );
}

function Page({ route, staff }: { route: Route; staff: Staff }) {
  switch (route.page) {
    case "call":
      return <CallView key={route.sessionId} sessionId={route.sessionId} />;
    case "sales":
      return <SalesView />;
    case "history":
      return <History />;
    case "callbacks":
      return <Callbacks />;
    case "admin":
      if (staff.role !== "manager")
        return (
          <p data-testid="admin-refused" className="text-slate-600">
            The admin pages are for managers.
          </p>
        );
      return <Admin section={route.section} />;
    default:
      return <LiveCalls />;
  }
}

export default function App() {
  const route = useRoute();
  const [staff, setStaff] = useState<Staff | null>(() => (getToken() ? getStaff() : null));

  useEffect(() => onSignedOut(() => setStaff(null)), []);

  if (staff === null) {
    return (
      <Login
        onSignedIn={(s) => {
          setStaff(s);
          if (route.page === "login") navigate("/");
        }}
      />
    );
  }

  return (
    <SalesFeedProvider>
      <div className="min-h-screen">
        <header className="bg-slate-800 text-white">
          <div className="mx-auto flex max-w-6xl items-center gap-2 px-4 py-2">
            <span className="mr-4 font-semibold">dealerline</span>
            <NavLink
              to="/"
              label="Live calls"
              active={route.page === "live" || route.page === "call"}
            />
            <NavLink to="/sales" label="Sales" active={route.page === "sales"} />
            <NavLink to="/history" label="History" active={route.page === "history"} />
            <NavLink to="/callbacks" label="Callbacks" active={route.page === "callbacks"} />
            {staff.role === "manager" && (
              <NavLink to="/admin" label="Admin" active={route.page === "admin"} />
            )}
            <span className="ml-auto text-sm text-slate-300" data-testid="signed-in-as">
              {staff.name} · {staff.role}
            </span>
            <button
              type="button"
              data-testid="sign-out"
              onClick={() => signOut()}
              className="rounded px-3 py-1.5 text-sm text-slate-200 hover:bg-slate-700"
            >
              Sign out
            </button>
          </div>
        </header>
        <main className="mx-auto max-w-6xl px-4 py-4">
          <Page route={route} staff={staff} />
        </main>
      </div>
    </SalesFeedProvider>
  );
}
