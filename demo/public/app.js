// The demo SPA: talks only to its own origin. Every call carries X-CSRF: 1 (Gatehouse refuses cookie
// requests without it). The SPA contract: 401 -> log in again; 502/503 -> back off and retry.
'use strict';

const $ = (id) => document.getElementById(id);
const show = (id, on) => ($(id).hidden = !on);

async function call(path, init = {}) {
  const headers = { 'X-CSRF': '1', ...(init.headers || {}) };
  for (let attempt = 0; ; attempt++) {
    const res = await fetch(path, { credentials: 'same-origin', ...init, headers });
    if ((res.status === 502 || res.status === 503) && attempt < 3) {
      const wait = Number(res.headers.get('Retry-After')) || 2 ** attempt;
      banner(`The service is briefly unavailable (${res.status}); retrying in ${wait} s…`);
      await new Promise((r) => setTimeout(r, wait * 1000));
      continue;
    }
    return res;
  }
}

function banner(text) {
  $('banner').textContent = text || '';
  show('banner', Boolean(text));
}

function time(unixSeconds) {
  return new Date(unixSeconds * 1000).toLocaleString();
}

function loggedOut(message) {
  show('logged-in', false);
  show('api-card', false);
  show('logged-out', true);
  if (message) banner(message);
}

async function refreshSession() {
  const res = await call('/auth/session');
  if (res.status === 401) return loggedOut();
  if (!res.ok) return banner(`Could not load the session (${res.status}).`);
  const s = await res.json();
  $('user-name').textContent = s.user.name || s.user.sub;
  $('user-sub').textContent = s.user.sub;
  $('user-email').textContent = s.user.email || '—';
  $('session-end').textContent = time(s.expiresAt);
  $('session-idle').textContent = time(s.idleExpiresAt);
  show('logged-out', false);
  show('logged-in', true);
}

async function callApi() {
  const res = await call('/api/hello');
  const body = await res.text();
  if (res.status === 401) {
    const code = safeJson(body).error;
    return loggedOut(
      code === 'session_expired' ? 'Your session has ended at the identity provider. Please log in again.' : 'Please log in.',
    );
  }
  banner('');
  $('api-status').textContent = String(res.status);
  $('api-status').className = `status ${res.ok ? 'ok' : 'err'}`;
  $('api-result').textContent = JSON.stringify(safeJson(body), null, 2);
  show('api-card', true);
}

async function logout() {
  const res = await call('/auth/logout', { method: 'POST' });
  const { logoutUrl } = res.ok ? await res.json() : { logoutUrl: null };
  if (logoutUrl) window.location.assign(logoutUrl);
  else loggedOut('You are logged out.');
}

function safeJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return { body: text };
  }
}

$('call-api').addEventListener('click', () => void callApi());
$('logout').addEventListener('click', () => void logout());
$('js-cookies').textContent = JSON.stringify(document.cookie);
void refreshSession();
