import { upstreamPath } from '../../src/api/pathGuard';

describe('upstreamPath (/api/<p> reaches only <UPSTREAM>/<p>)', () => {
  it.each([
    ['/api/things', '/things'],
    ['/api/things?x=1&y=%2F', '/things?x=1&y=%2F'],
    ['/api', '/'],
    ['/api/', '/'],
    ['/api/a/b/', '/a/b/'],
    ['/api/users/j%C3%B6rg', '/users/j%C3%B6rg'],
    ['/api/a@b', '/a@b'],
    ['/api/search/100%25', '/search/100%25'],
    ['/api/items;v=2', '/items;v=2'],
    ['/api/v1.2/a..b/x.json?q=%2e%2e', '/v1.2/a..b/x.json?q=%2e%2e'],
    ['/api/-_~/', '/-_~/'],
  ])('maps %s to %s', (raw, expected) => {
    expect(upstreamPath(raw)).toBe(expected);
  });

  // Paths that could climb out of the upstream's base, or that the upstream might read otherwise than the gateway
  // does (encoded dots and slashes, control characters, fragments): the gateway answers them 400 bad_request.
  it.each([
    '/api/../admin',
    '/api/%2e%2e/admin',
    '/api/%2E%2E/admin',
    '/api/.%2e/admin',
    '/api/..%2fadmin',
    '/api/%5c..%5cadmin',
    '/api/a\\..\\admin',
    '/api//evil.example/x',
    '/api/@evil.example/x',
    '/api/./x',
    '/api/x/%00',
    '/api/x%0d%0a',
    '/api/%zz',
    '/apix',
    '/api/x#fragment',
    '/api/..;/admin',
    '/api/.;x/admin',
    '/api/%2e%2e;jsessionid=1/admin',
    '/api/%252e%252e/admin',
    '/api/a%252fb',
    '/api/%255c..',
    'http://evil.example/api/x',
    '/api/items?x=\u0001',
    '/api/items//',
    '/api/..',
    '/api/.',
  ])('refuses %s', (raw) => {
    expect(upstreamPath(raw)).toBeUndefined();
  });
});
