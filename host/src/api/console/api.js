// The console's only way to the server: the JSON API, with the key (when
// this keeper has one) from sessionStorage in header X-API-Key. No cookies.

const KEY = "keeper-api-key";

export function storedKey() {
  return sessionStorage.getItem(KEY);
}

export function storeKey(key) {
  sessionStorage.setItem(KEY, key);
}

export function forgetKey() {
  sessionStorage.removeItem(KEY);
}

/** A refusal or failure the API answered, with its JSON message. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/**
 * Calls the API; resolves to the parsed JSON body. An error answer rejects
 * with an ApiError carrying the server's message (status 401: no or a wrong
 * key). `body` is sent as JSON; a Blob or ArrayBuffer as bytes.
 */
export async function call(method, path, body) {
  const headers = { Accept: "application/json" };
  const key = storedKey();
  if (key) headers["X-API-Key"] = key;
  let payload;
  if (body instanceof Blob || body instanceof ArrayBuffer) {
    payload = body;
    headers["Content-Type"] = "application/octet-stream";
  } else if (body !== undefined) {
    payload = JSON.stringify(body);
    headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body: payload, credentials: "omit", cache: "no-store" });
  } catch (e) {
    throw new ApiError(0, `keeper does not answer (${e.message}); is keeper run still running?`);
  }
  let data = null;
  const text = await response.text();
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  // /health answers 503 with its usual body when keeper.db cannot be read.
  if (!response.ok && !(path === "/health" && data && data.status === "unhealthy")) {
    const message = (data && data.message) || `${method} ${path}: HTTP ${response.status}`;
    throw new ApiError(response.status, message);
  }
  return data;
}

export const get = (path) => call("GET", path);
export const post = (path, body) => call("POST", path, body);
export const put = (path, body) => call("PUT", path, body);
