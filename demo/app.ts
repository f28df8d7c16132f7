/**
 * The demo SPA, built on gatehouse-bff/client: it talks only to its own origin and never sees a token.
 * While logged in, the live view polls /auth/session (which never extends the session nor refreshes the
 * token) and counts the access token down; an API call after it expired is refreshed by Gatehouse, and the
 * count goes up. Logged out, it asks once at load and again when the tab gets the focus back (a login in
 * another tab), never on a timer: each answer is a 401, which the browser's console shows as an error.
 *
 * The live clock is a WebSocket (openSocket, /api/live/clock → the demo API's /clock). When Gatehouse closes it
 * because the session ended (a logout in another tab, the IdP ending the grant), the client calls the same
 * handler as for a 401, and the same banner shows. Closed for another reason, it opens again at the next poll,
 * which has just found the session alive.
 */
import { createGatehouseClient, type GatehouseSession } from '../client/index.js';

const POLL_MS = 2000;

const $ = (id: string): HTMLElement => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`demo: no #${id}`);
  return el;
};
const show = (id: string, on: boolean) => ($(id).hidden = !on);
const time = (unixSeconds: number) => new Date(unixSeconds * 1000).toLocaleString([], { dateStyle: 'medium', timeStyle: 'medium' });

let session: GatehouseSession | null = null;
let polling: ReturnType<typeof setInterval> | undefined;
/** The live clock's socket while it is open or opening; `clockOn` is the Stop/Start button's choice. */
let clock: WebSocket | undefined;
let clockOn = true;
/** The access token's lifetime as first seen, for the bar (the IdP's lifetime is not reported). */
let tokenLife = { expiresAt: 0, seconds: 1 };

const gatehouse = createGatehouseClient({
  // The session ended (logged out elsewhere, idle, or the IdP ended the grant): say so instead of leaving the page.
  onUnauthenticated: (reason) =>
    sessionEnded(
      reason === 'session_expired'
        ? 'Your session was ended by the identity provider. Log in again to continue.'
        : 'Your session has ended. Log in again to continue.',
    ),
});

/** The session is over: a banner with a login button replaces the page. */
function sessionEnded(message: string): void {
  session = null;
  stopPolling();
  stopClock();
  show('logged-in', false);
  show('api-card', false);
  show('logged-out', false);
  notice(message, true);
}

function notice(message: string, withLogin = false): void {
  $('banner-text').textContent = message;
  show('banner-login', withLogin);
  show('banner', true);
}

function render(s: GatehouseSession): void {
  session = s;
  $('user-name').textContent = s.user.name ?? s.user.sub;
  $('user-sub').textContent = s.user.sub;
  $('user-email').textContent = s.user.email ?? '—';
  $('session-end').textContent = time(s.expiresAt);
  $('session-idle').textContent = time(s.idleExpiresAt);
  $('token-refreshes').textContent = s.refreshCount === undefined ? '—' : `${s.refreshCount} ${s.refreshCount === 1 ? 'time' : 'times'}`;
  show('banner', false);
  show('logged-out', false);
  show('logged-in', true);
  tick();
  polling ??= setInterval(() => void poll(), POLL_MS);
  if (clockOn) startClock();
}

function clockState(text: string, ok?: boolean): void {
  $('clock-state').textContent = text;
  $('clock-state').className = `status${ok === undefined ? '' : ok ? ' ok' : ' err'}`;
}

/** Opens the live clock unless it is open (or there is no session to open it with). */
function startClock(): void {
  if (clock || !session) return;
  clockState('connecting');
  const ws = gatehouse.openSocket('/api/live/clock', {
    onOpen: () => clockState('live', true),
    onMessage: (event) => {
      const { time: at, sub } = JSON.parse(String(event.data)) as { time: string; sub: string };
      $('clock-time').textContent = new Date(at).toLocaleTimeString();
      $('clock-sub').textContent = sub;
    },
    // After the session check: when the session ended, onUnauthenticated has shown the banner already.
    onClose: (event, ended) => {
      if (clock !== ws) return; // stopped here
      clock = undefined;
      if (!ended) clockState(`closed (${event.code}${event.reason ? ` ${event.reason}` : ''}); opening again`, false);
    },
  });
  clock = ws;
}

function stopClock(): void {
  const ws = clock;
  clock = undefined;
  ws?.close();
}

function stopPolling(): void {
  clearInterval(polling);
  polling = undefined;
}

/** Once a second: the access token's remaining life, from the last /auth/session answer. */
function tick(): void {
  const expiresAt = session?.accessTokenExpiresAt;
  if (expiresAt === undefined) return;
  const left = Math.max(0, Math.ceil(expiresAt - Date.now() / 1000));
  if (tokenLife.expiresAt !== expiresAt) tokenLife = { expiresAt, seconds: Math.max(1, left) };
  $('token-left').textContent = left > 0 ? `${left} s` : 'expired — the next API call refreshes it';
  const bar = $('token-bar');
  bar.style.width = `${Math.min(100, (100 * left) / tokenLife.seconds)}%`;
  bar.classList.toggle('expired', left === 0);
}

async function poll(): Promise<void> {
  try {
    const s = await gatehouse.getSession();
    if (s) render(s);
    else if (session) sessionEnded('Your session has ended. Log in again to continue.');
    else {
      stopPolling();
      if ($('banner').hidden) show('logged-out', true);
    }
  } catch {
    // 502/503 after retries, or offline: keep what is shown and try again at the next poll.
  }
}

async function callApi(): Promise<void> {
  const res = await gatehouse.fetch('/api/hello');
  if (res.status === 401 && !session) return; // onUnauthenticated has shown the banner
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: show the text
  }
  $('api-status').textContent = String(res.status);
  $('api-status').className = `status ${res.ok ? 'ok' : 'err'}`;
  $('api-result').textContent = typeof body === 'string' ? body : JSON.stringify(body, null, 2);
  show('api-card', true);
  await poll(); // the call may have refreshed the token
}

for (const id of ['login', 'banner-login']) $(id).setAttribute('href', gatehouse.loginUrl('/'));
$('call-api').addEventListener('click', () => void callApi());
$('clock-toggle').addEventListener('click', () => {
  clockOn = !clockOn;
  $('clock-toggle').textContent = clockOn ? 'Stop' : 'Start';
  if (clockOn) startClock();
  else {
    stopClock();
    clockState('stopped');
  }
});
$('logout').addEventListener('click', () => {
  stopClock(); // closed here first: the logout's own session_ended needs no banner
  gatehouse.logout().catch(() => notice('Logging out failed (the gateway did not answer). Try again.'));
});
$('js-cookies').textContent = JSON.stringify(document.cookie);
void poll();
window.addEventListener('focus', () => {
  if (!session) void poll();
});
setInterval(tick, 1000);
