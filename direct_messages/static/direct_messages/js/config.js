// The page's configuration (the view renders it with json_script as #dm-config), read
// once, and the one place that knows where the app is mounted: every API path, socket
// path and login redirect is built from the roots it carries (api_url, ws_url,
// login_url), so the app works under any URL prefix.

export const config = JSON.parse(document.getElementById("dm-config").textContent);

const root = (url) => (url.endsWith("/") ? url : `${url}/`);
const relative = (rest) => String(rest).replace(/^\/+/u, "");

/** apiPath("inbox?folder=primary") -> "<api>/inbox?folder=primary". */
export function apiPath(rest) {
  return root(config.api_url) + relative(rest);
}

/** wsPath("inbox/") -> "<ws>/inbox/"; socket.js turns the path into a ws(s):// URL. */
export function wsPath(rest) {
  return root(config.ws_url) + relative(rest);
}

/** The host's login page, coming back to this page afterwards. */
export function loginUrl() {
  const next = `next=${encodeURIComponent(location.pathname)}`;
  return `${config.login_url}${config.login_url.includes("?") ? "&" : "?"}${next}`;
}
