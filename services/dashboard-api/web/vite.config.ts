import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// The build is served by dashboard-api at `/` (index.html fallback for any other path),
// so assets are referenced from the root. In development `npm run dev` proxies the API
// and the sockets to a dashboard-api on DASHBOARD_URL (default http://127.0.0.1:8086).
const backend = process.env.DASHBOARD_URL ?? "http://127.0.0.1:8086";

export default defineConfig({
  plugins: [react()],
  base: "/",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    sourcemap: false,
    chunkSizeWarningLimit: 600,
  },
  server: {
    proxy: {
      "/api": backend,
      "/ws": { target: backend.replace(/^http/, "ws"), ws: true },
    },
  },
});
