// The shell: sign-in when there is no token, otherwise the navigation bar and one page.
// Signing out (or any 401 / 4401) clears the token and shows sign-in again.
import { useEffect, useState } from "react";
import { getStaff, getToken, onSignedOut, signOut } from "./api";
import { navigate, useRoute } from "./router";
import type { Route } from "./router";
import { SalesFeedProvider } from "./salesFeed";
import type { Staff } from "./types";
import CallView from "./pages/CallView";
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

function Page({ route }: { route: Route }) {
  switch (route.page) {
    case "call":
      return <CallView key={route.sessionId} sessionId={route.sessionId} />;
    case "sales":
      return <SalesView />;
    case "history":
      return <History />;
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
          <Page route={route} />
        </main>
      </div>
    </SalesFeedProvider>
  );
}
