// The public HTTP API, as the pages use it: JSON requests with the signed-in customer's
// token, and every problem+json answer turned into one sentence a person can act on.

const TOKEN_KEY = "marquee.token";

export function token() {
  return localStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  if (value) localStorage.setItem(TOKEN_KEY, value);
  else localStorage.removeItem(TOKEN_KEY);
}

/** An answer that was not 2xx: `problem` is its problem+json body (RFC 9457). */
export class ApiError extends Error {
  constructor(status, problem, retryAfter) {
    super(explain(status, problem, retryAfter));
    this.status = status;
    this.problem = problem;
    this.slug = (problem.type || "").replace("/problems/", "");
  }

  /** Whether the request may have taken effect without our knowing: no answer came (status
   *  0), a copy of it was still running (409), or the server failed (5xx). Sending it again is
   *  safe only with the same Idempotency-Key. */
  get outcomeUnknown() {
    return this.status === 0 || this.status === 409 || this.status >= 500;
  }
}

/** A fresh Idempotency-Key: 128 random bits in hex, so that it says nothing about the request
 *  (the server keeps keys for a day). `crypto.getRandomValues`, unlike `crypto.randomUUID`,
 *  also works on a page served over plain HTTP. */
export function idempotencyKey() {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

const REASONS = {
  card_declined: "Your card was declined. Try another card.",
  insufficient_funds: "Your card was declined for insufficient funds. Try another card.",
  processor_unavailable: "The payment service is not answering. Your seats stay held; try again in a moment.",
};

/** One sentence for a problem, in the words a customer or admin needs. */
export function explain(status, problem, retryAfter) {
  const slug = (problem.type || "").replace("/problems/", "");
  const wait = retryAfter ? ` Try again in ${retryAfter} seconds.` : " Try again shortly.";
  switch (slug) {
    case "seats-unavailable": {
      const seats = (problem.seats || []).join(", ");
      return seats
        ? `Someone just took ${seats}. Pick other seats.`
        : "Some of those seats were just taken. Pick other seats.";
    }
    case "reservation-expired":
      return "Your hold expired and the seats were let go. Choose seats again.";
    case "payment-declined":
      return REASONS[problem.reason] || `Payment declined (${problem.reason || "no reason given"}). Try another card.`;
    case "rate-limited":
      return "Too many attempts from here." + wait;
    case "overloaded":
      return "This showtime is very busy right now." + wait;
    case "service-unavailable":
      return "The booking service is unavailable." + wait;
    case "unauthenticated":
      return problem.detail || "Please log in.";
    case "forbidden":
      return "Your account is not allowed to do that.";
    case "not-found":
      return "That was not found. It may have been removed.";
    case "email-taken":
      return "An account with that email already exists. Log in instead.";
    case "screen-busy":
      return `That screen is busy then: ${problem.detail}`;
    case "showtime-closed":
      return "This showtime is closed (cancelled or already started).";
    case "validation-failed": {
      const fields = (problem.errors || []).map((e) => `${e.field}: ${e.message}`);
      return fields.length ? `Please check: ${fields.join("; ")}.` : problem.detail;
    }
    default:
      return problem.detail || problem.title || `The server answered ${status}.`;
  }
}

/** Sends a request; resolves to the JSON body (or null), rejects with an ApiError. */
export async function call(method, path, body, headers = {}) {
  const init = { method, headers: { accept: "application/json", ...headers } };
  const bearer = token();
  if (bearer) init.headers.authorization = `Bearer ${bearer}`;
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, { detail: "The server cannot be reached. Check your connection." });
  }
  if (response.status === 204) return null;
  const text = await response.text();
  const json = text ? safeJson(text) : null;
  if (!response.ok) {
    if (response.status === 401 && bearer && path !== "/v1/auth/token") setToken(null);
    throw new ApiError(response.status, json || {}, response.headers.get("retry-after"));
  }
  return json;
}

function safeJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

export const get = (path) => call("GET", path);
export const post = (path, body, headers) => call("POST", path, body, headers);
export const del = (path) => call("DELETE", path);

/** Money in minor units as text: "12.50 EUR". */
export function money(m) {
  if (!m) return "";
  return `${(m.amount / 100).toFixed(2)} ${m.currency}`;
}

/** A query string from the defined values of an object. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}
