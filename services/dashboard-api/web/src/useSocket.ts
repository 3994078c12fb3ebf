// One WebSocket to dashboard-api that reconnects by itself with exponential backoff.
//
// Frames carry `seq` (the JetStream stream sequence): on a reconnect the per-call socket
// replays the whole call, so every frame whose seq is not above the last one seen is
// dropped; frames without seq (the sales snapshot, staff_duty) always pass, and a snapshot
// starts the count again. The token goes as the first message, never in the URL. A close
// with code 4401 means the token is no longer good (expired, or the account changed):
// sign out instead of retrying.
import { useEffect, useRef, useState } from "react";
import { authMessage, signOut, socketUrl } from "./api";
import type { Frame } from "./types";

export type SocketStatus = "connecting" | "open" | "reconnecting";

const FIRST_DELAY_MS = 500;
const MAX_DELAY_MS = 10_000;

export function backoffDelay(attempt: number): number {
  const base = Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** attempt);
  return base / 2 + Math.random() * (base / 2);
}

export interface SocketState {
  status: SocketStatus;
  attempts: number; // failed connections in a row
}

export function useSocket(
  path: string | null,
  onFrame: (frame: Frame) => void,
  onOpen?: () => void,
): SocketState {
  const [state, setState] = useState<SocketState>({ status: "connecting", attempts: 0 });
  const frameRef = useRef(onFrame);
  const openRef = useRef(onOpen);
  frameRef.current = onFrame;
  openRef.current = onOpen;

  useEffect(() => {
    if (path === null) return;
    let ws: WebSocket | null = null;
    let timer: number | undefined;
    let attempts = 0;
    let lastSeq = -1;
    let stopped = false;

    const connect = () => {
      if (stopped) return;
      const socket = new WebSocket(socketUrl(path));
      ws = socket;
      socket.onopen = () => {
        socket.send(authMessage());
        attempts = 0;
        setState({ status: "open", attempts: 0 });
        openRef.current?.();
      };
      socket.onmessage = (event: MessageEvent) => {
        let frame: Frame;
        try {
          frame = JSON.parse(String(event.data)) as Frame;
        } catch {
          return;
        }
        if (frame.type === "snapshot") {
          // A fresh snapshot (sales socket): only events after it follow, whatever their
          // seq (a stream that was recreated starts again at 1).
          lastSeq = -1;
        } else if (typeof frame.seq === "number") {
          if (frame.seq <= lastSeq) return;
          lastSeq = frame.seq;
        }
        frameRef.current(frame);
      };
      socket.onclose = (event: CloseEvent) => {
        ws = null;
        if (stopped) return;
        if (event.code === 4401) {
          stopped = true;
          signOut();
          return;
        }
        const delay = backoffDelay(attempts);
        attempts += 1;
        setState({ status: "reconnecting", attempts });
        timer = window.setTimeout(connect, delay);
      };
    };

    setState({ status: "connecting", attempts: 0 });
    connect();
    return () => {
      stopped = true;
      window.clearTimeout(timer);
      ws?.close(1000, "leaving");
    };
  }, [path]);

  return state;
}
