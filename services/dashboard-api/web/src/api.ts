// REST calls to dashboard-api with the staff token kept in sessionStorage. A 401 anywhere
// forgets the token and sends the user back to sign-in.
import type { Staff } from "./types";

const TOKEN_KEY = "dealerline.token";
const STAFF_KEY = "dealerline.staff";

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export function getToken(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function getStaff(): Staff | null {
  const raw = sessionStorage.getItem(STAFF_KEY);
  if (!raw) return null;
  try {
    return JSON.parse(raw) as Staff;
  } catch {
    return null;
  }
}

export function saveStaff(staff: Staff): void {
  sessionStorage.setItem(STAFF_KEY, JSON.stringify(staff));
}

const listeners = new Set<() => void>();

/** Called when the session ends (sign-out, 401, socket closed with 4401). */
export function onSignedOut(listener: () => void): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

export function signOut(): void {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(STAFF_KEY);
  listeners.forEach((l) => l());
}

interface FieldError {
  loc?: (string | number)[];
  msg?: string;
}

/** A 422's list of field errors as one line: `phone: too few digits for a phone number`. */
export function fieldErrors(detail: FieldError[]): string {
  return detail
    .map((e) => {
      const where = (e.loc ?? []).filter((p) => p !== "body").join(".");
      const msg = (e.msg ?? "invalid").replace(/^Value error, /, "");
      return where ? `${where}: ${msg}` : msg;
    })
    .join("; ");
}

async function detailOf(resp: Response): Promise<string> {
  try {
    const body = (await resp.json()) as { detail?: unknown };
    if (typeof body.detail === "string") return body.detail;
    if (Array.isArray(body.detail)) return fieldErrors(body.detail as FieldError[]);
    if (body.detail !== undefined) return JSON.stringify(body.detail);
  } catch {
    // not JSON
  }
  return `${resp.status} ${resp.statusText}`;
}

export async function api<T>(path: string, init: RequestInit = {}): Promise<T> {
  const headers = new Headers(init.headers);
  const token = getToken();
  if (token) headers.set("Authorization", `Bearer ${token}`);
  if (init.body !== undefined) headers.set("Content-Type", "application/json");
  const resp = await fetch(path, { ...init, headers });
  if (resp.status === 401) {
    signOut();
    throw new ApiError(401, "Your session has ended, please sign in again.");
  }
  if (!resp.ok) throw new ApiError(resp.status, await detailOf(resp));
  if (resp.status === 204) return undefined as T;
  return (await resp.json()) as T;
}

/** `api` with a JSON body. */
export function send<T>(method: string, path: string, body?: unknown): Promise<T> {
  return api<T>(path, { method, body: body === undefined ? undefined : JSON.stringify(body) });
}

export async function login(email: string, password: string): Promise<Staff> {
  const resp = await fetch("/api/auth/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ email, password }),
  });
  if (resp.status === 401) throw new ApiError(401, "Wrong email or password.");
  if (resp.status === 429) throw new ApiError(429, "Too many attempts, try again later.");
  if (resp.status === 503) throw new ApiError(503, "The server is busy, try again in a moment.");
  if (!resp.ok) throw new ApiError(resp.status, await detailOf(resp));
  const body = (await resp.json()) as { access_token: string; staff: Staff };
  sessionStorage.setItem(TOKEN_KEY, body.access_token);
  saveStaff(body.staff);
  return body.staff;
}

/** The WebSocket URL for a path on this origin. The token is never in it (proxies and
 * access logs keep URLs): the socket sends it as its first message (`authMessage`). */
export function socketUrl(path: string): string {
  const proto = window.location.protocol === "https:" ? "wss:" : "ws:";
  return `${proto}//${window.location.host}${path}`;
}

/** The first message of every socket: the staff token. */
export function authMessage(): string {
  return JSON.stringify({ type: "auth", token: getToken() ?? "" });
}
