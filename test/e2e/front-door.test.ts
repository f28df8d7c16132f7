/**
 * The front door is the one request listener: the API lane for /api, Express for the rest, and inside a host
 * Express app it leaves what it does not serve to the host's next handler.
 */
import express from 'express';
import request from 'supertest';
import { loginAs } from '../support/login';
import { startStack, SPA, type Stack } from '../support/stack';

describe('the front door', () => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack();
  });
  afterAll(() => s?.close());

  it('serves /api, /auth and health through one listener, and answers 404 not_found for anything else', async () => {
    const door = request(s.gw.gatehouse.frontDoor);
    await door.get('/healthz').expect(200, { status: 'ok' });
    await door.get('/api/x').set(SPA).expect(401);
    await door.get('/auth/session').set(SPA).expect(401);
    const r = await door.get('/nowhere').expect(404);
    expect(r.body).toEqual({ error: 'not_found', message: 'Not found.' });
  });

  it('inside a host Express app, passes what Gatehouse does not serve to the next handler', async () => {
    const host = express();
    host.use(s.gw.gatehouse.frontDoor);
    host.get('/hello', (_req, res) => res.send('host'));
    const browser = request.agent(host);
    expect((await browser.get('/hello').expect(200)).text).toBe('host');
    await browser.get('/healthz').expect(200, { status: 'ok' });
    await browser.get('/api/x').set(SPA).expect(401);
  });

  it('logs in and proxies through a server created on the front door', async () => {
    const browser = s.gw.agent(); // the stack's server listens with http.createServer-style wiring of frontDoor
    await loginAs(browser, s.idp, 'front-door-user');
    await browser.get('/api/x').set(SPA).expect(200);
  });
});
