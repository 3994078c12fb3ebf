// A tiny hash router: `#/`, `#/calls/<id>`, `#/sales`, `#/history`, `#/callbacks`,
// `#/admin/<section>`, `#/login`. A hash keeps every page at the one `/` the backend
// serves, so reloads never need the server.
import { useEffect, useState } from "react";

export type Route =
  | { page: "live" }
  | { page: "call"; sessionId: string }
  | { page: "sales" }
  | { page: "history" }
  | { page: "callbacks" }
  | { page: "admin"; section: string }
  | { page: "login" };

export function parseHash(hash: string): Route {
  const path = hash.replace(/^#/, "") || "/";
  const call = /^\/calls\/([^/?#]+)$/.exec(path);
  if (call) return { page: "call", sessionId: decodeURIComponent(call[1]) };
  if (path === "/sales") return { page: "sales" };
  if (path === "/history") return { page: "history" };
  if (path === "/callbacks") return { page: "callbacks" };
  const admin = /^\/admin(?:\/([a-z]+))?$/.exec(path);
  if (admin) return { page: "admin", section: admin[1] ?? "profile" };
  if (path === "/login") return { page: "login" };
  return { page: "live" };
}

export function navigate(path: string): void {
  window.location.hash = path;
}

export function useRoute(): Route {
  const [route, setRoute] = useState<Route>(() => parseHash(window.location.hash));
  useEffect(() => {
    const onChange = () => setRoute(parseHash(window.location.hash));
    window.addEventListener("hashchange", onChange);
    return () => window.removeEventListener("hashchange", onChange);
  }, []);
  return route;
}
