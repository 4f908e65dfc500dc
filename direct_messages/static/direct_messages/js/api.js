// The HTTP API of PROTOCOL.md, with the session cookie and Django's CSRF header.
// Paths are built with apiPath() from config.js (the API root depends on where the
// app is mounted).

import { apiPath, config, loginUrl } from "./config.js";

const SAFE = new Set(["GET", "HEAD", "OPTIONS"]);

export class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail || code);
    this.status = status; // 0 when the request never got an answer
    this.code = code;
    this.detail = detail || code;
  }
}

let fallbackToken = "";

export function setCsrfToken(token) {
  fallbackToken = token || "";
}

/** Django's csrftoken cookie (it may rotate on login), else the token the page carried. */
export function csrfToken() {
  for (const part of document.cookie.split(";")) {
    const [name, ...rest] = part.trim().split("=");
    if (name === "csrftoken") return decodeURIComponent(rest.join("="));
  }
  return fallbackToken;
}

// Set while the page is logging out: the server then closes its sockets (4401), and the
// log-out form's own redirect (the host's LOGOUT_REDIRECT_URL) must win over ours.
let leaving = false;
document.addEventListener("submit", (event) => {
  if (event.target.action?.endsWith(config.logout_url)) leaving = true;
});

export function loginRedirect() {
  if (!leaving) location.assign(loginUrl());
}

export function isLeaving() {
  return leaving;
}

async function errorFrom(response) {
  let code = "http_" + response.status;
  let detail = response.statusText || code;
  try {
    const body = await response.json();
    if (body && body.error) ({ code, detail } = body.error);
  } catch {
    // not the JSON envelope (a proxy's page): keep the status line
  }
  return new ApiError(response.status, code, detail);
}

export async function api(method, path, body = undefined) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (!SAFE.has(method)) headers["X-CSRFToken"] = csrfToken();
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (exc) {
    throw new ApiError(0, "network", "You're offline or the server can't be reached.");
  }
  if (response.status === 401) {
    loginRedirect();
    throw await errorFrom(response);
  }
  if (!response.ok) throw await errorFrom(response);
  if (response.status === 204) return null;
  return response.json();
}

/**
 * POST <api>/attachments with upload progress (fetch cannot report it; XHR can).
 * Returns {promise, abort}; the promise resolves to the Attachment.
 */
export function uploadAttachment(file, onProgress) {
  const xhr = new XMLHttpRequest();
  const promise = new Promise((resolve, reject) => {
    xhr.open("POST", apiPath("attachments"));
    xhr.setRequestHeader("Accept", "application/json");
    xhr.setRequestHeader("X-CSRFToken", csrfToken());
    xhr.responseType = "json";
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    });
    xhr.addEventListener("load", () => {
      if (xhr.status === 201 || xhr.status === 200) {
        onProgress(1);
        resolve(xhr.response);
        return;
      }
      const error = (xhr.response && xhr.response.error) || {};
      reject(new ApiError(xhr.status, error.code || `http_${xhr.status}`, error.detail || "Upload failed"));
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "network", "Upload failed: network error")));
    xhr.addEventListener("abort", () => reject(new ApiError(0, "aborted", "Upload cancelled")));
    const form = new FormData();
    form.append("file", file, file.name);
    xhr.send(form);
  });
  return { promise, abort: () => xhr.abort() };
}

/** A readable sentence for an API error code. */
export function describeError(error) {
  if (!(error instanceof ApiError)) return "Something went wrong.";
  switch (error.code) {
    case "network":
      return error.detail;
    case "rate_limited":
      return "You're sending too fast. Wait a moment and try again.";
    case "too_large":
      return `Too large: ${error.detail}`;
    case "unsupported_media_type":
      return "That file type isn't supported.";
    case "forbidden":
      return `Not allowed: ${error.detail}`;
    default:
      return error.detail || "Something went wrong.";
  }
}
