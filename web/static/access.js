// Credentials for the pages. With no API keys on the server (the default) nothing here is needed: the pages
// connect without a token. With keys, the live page keeps the user's API key in localStorage and mints short-lived
// tokens from it (POST /v1/tokens): a "listen" token for its own socket, a "read" one for the overlay URL it shares.
const STORE = "livecaptions.apiKey";

export function apiKey() {
  return localStorage.getItem(STORE) || "";
}

export function setApiKey(key) {
  if (key) localStorage.setItem(STORE, key);
  else localStorage.removeItem(STORE);
}

/** A token for `scope` ("listen" | "read") on `stream`, or null when no API key is set. Throws with the reason. */
export async function mint(scope, stream, ttlSeconds = 3600) {
  const key = apiKey();
  if (!key) return null;
  const r = await fetch("/v1/tokens", {
    method: "POST",
    headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
    body: JSON.stringify({ scope, stream, ttl_s: ttlSeconds }),
  });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body?.error?.message || `token request failed (HTTP ${r.status})`);
  return body.token;
}

/** `?token=` of the page's own URL (overlay and viewer links carry a read token when auth is on). */
export function pageToken() {
  return new URLSearchParams(location.search).get("token");
}
