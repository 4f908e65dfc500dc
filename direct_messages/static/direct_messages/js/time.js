// Times: the API sends RFC 3339 UTC; people read short relative times and local clocks.

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

const clock = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit" });
const weekday = new Intl.DateTimeFormat(undefined, { weekday: "short" });
const dayMonth = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric" });
const full = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const fullDate = new Intl.DateTimeFormat(undefined, { dateStyle: "medium" });

export function parseTime(value) {
  return value ? new Date(value) : null;
}

/** "now", "5m", "3h", "2d", "4w", "1y": the inbox's age of the last message. */
export function relativeShort(date, now = Date.now()) {
  if (!date) return "";
  const delta = Math.max(0, now - date.getTime());
  if (delta < MINUTE) return "now";
  if (delta < HOUR) return `${Math.floor(delta / MINUTE)}m`;
  if (delta < DAY) return `${Math.floor(delta / HOUR)}h`;
  if (delta < 7 * DAY) return `${Math.floor(delta / DAY)}d`;
  if (delta < 365 * DAY) return `${Math.floor(delta / (7 * DAY))}w`;
  return `${Math.floor(delta / (365 * DAY))}y`;
}

/** "Active now", "Active 5m ago", ...; empty when unknown or older than a week. */
export function presenceLabel(presence, now = Date.now()) {
  if (!presence) return "";
  if (presence.online) return "Active now";
  const last = parseTime(presence.last_active_at);
  if (!last) return "";
  const delta = Math.max(0, now - last.getTime());
  if (delta < MINUTE) return "Active just now";
  if (delta >= 7 * DAY) return "";
  return `Active ${relativeShort(last, now)} ago`;
}

function startOfDay(date) {
  return new Date(date.getFullYear(), date.getMonth(), date.getDate()).getTime();
}

export function sameDay(a, b) {
  return startOfDay(a) === startOfDay(b);
}

/** A day separator: "Today 2:05 PM", "Yesterday 9:10 AM", "Mon 3:00 PM", "Nov 3, 2026, 3:00 PM". */
export function separatorLabel(date, now = new Date()) {
  const days = Math.round((startOfDay(now) - startOfDay(date)) / DAY);
  const time = clock.format(date);
  if (days <= 0) return `Today ${time}`;
  if (days === 1) return `Yesterday ${time}`;
  if (days < 7) return `${weekday.format(date)} ${time}`;
  if (date.getFullYear() === now.getFullYear()) return `${dayMonth.format(date)}, ${time}`;
  return full.format(date);
}

export function clockTime(date) {
  return date ? clock.format(date) : "";
}

export function fullTime(date) {
  return date ? full.format(date) : "";
}

export function longDate(date) {
  return date ? fullDate.format(date) : "";
}
