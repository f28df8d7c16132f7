import { parseRoutes, RouteTable, type Route } from '../../src/api/routes';

const defaults = {
  upstream: new URL('https://api.internal/v1'),
  timeoutSeconds: 30,
  scopes: 'openid profile email',
  scopesName: 'GATEHOUSE_SCOPES',
};

function parse(raw: unknown): { routes: Route[]; problems: string[] } {
  const problems: string[] = [];
  const routes = parseRoutes(raw, defaults, 'GATEHOUSE_ROUTES', (p) => problems.push(p));
  return { routes, problems };
}

describe('parseRoutes', () => {
  it('gives one route /api → the upstream, token user, when none are configured', () => {
    const { routes, problems } = parse(undefined);
    expect(problems).toEqual([]);
    expect(routes).toEqual([
      expect.objectContaining({ path: '/api', prefix: '', token: 'user', timeoutSeconds: 30, allowSetCookie: false }),
    ]);
    expect(routes[0]!.upstream.href).toBe('https://api.internal/v1');
  });

  it('reads routes from JSON text or an array, with their defaults', () => {
    const json =
      '[{"path": "/api/orders", "upstream": "http://orders:8080/v2", "token": "optional", "methods": ["get", "POST"], "timeoutSeconds": 5, "allowSetCookie": true}, {"path": "/api/public", "upstream": "http://cms", "token": "none"}]';
    const { routes, problems } = parse(json);
    expect(problems).toEqual([]);
    expect(routes[0]).toMatchObject({ path: '/api/orders', prefix: '/orders', token: 'optional', timeoutSeconds: 5, allowSetCookie: true });
    expect([...routes[0]!.methods!]).toEqual(['GET', 'POST']);
    expect(routes[1]).toMatchObject({ path: '/api/public', token: 'none', methods: undefined, timeoutSeconds: 30, websocket: false });
    expect(parse([{ path: '/api/live', upstream: 'http://feed', websocket: true }]).routes[0]).toMatchObject({ websocket: true });
    expect(routes[0]!.audience).toBeUndefined();
    const own = parse([{ path: '/api/orders', upstream: 'http://o', resource: 'https://orders.example/', scope: 'profile' }]);
    expect(own.problems).toEqual([]);
    expect(own.routes[0]!.audience).toEqual({
      key: 'https://orders.example/ profile',
      route: '/api/orders',
      resource: 'https://orders.example/',
      scope: 'profile',
    });
    expect(parse(JSON.parse(json)).routes).toHaveLength(2);
  });

  it.each([
    ['not json', 'GATEHOUSE_ROUTES: is not valid JSON'],
    [[], 'GATEHOUSE_ROUTES: must be a non-empty array'],
    [{ path: '/api' }, 'GATEHOUSE_ROUTES: must be a non-empty array'],
    [['x'], 'GATEHOUSE_ROUTES[0]: must be an object'],
    [[{ upstream: 'http://a' }], 'GATEHOUSE_ROUTES[0].path: is required'],
    [[{ path: '/orders', upstream: 'http://a' }], 'GATEHOUSE_ROUTES[0].path: "/orders" is not /api or a path under it'],
    [[{ path: '/api/', upstream: 'http://a' }], 'GATEHOUSE_ROUTES[0].path: "/api/" is not /api'],
    [[{ path: '/api/../admin', upstream: 'http://a' }], 'GATEHOUSE_ROUTES[0].path: "/api/../admin" is not /api'],
    [[{ path: '/api' }], 'GATEHOUSE_ROUTES[0].upstream: is required'],
    [[{ path: '/api', upstream: 'ftp://a' }], 'GATEHOUSE_ROUTES[0].upstream: must be an http(s) URL'],
    [[{ path: '/api', upstream: 'nowhere' }], 'GATEHOUSE_ROUTES[0].upstream: "nowhere" is not an absolute URL'],
    [[{ path: '/api', upstream: 'http://u:p@a' }], 'GATEHOUSE_ROUTES[0].upstream: must not carry credentials'],
    [[{ path: '/api', upstream: 'http://a', token: 'admin' }], 'GATEHOUSE_ROUTES[0].token: "admin" is not a token policy'],
    [[{ path: '/api', upstream: 'http://a', methods: 'GET' }], 'GATEHOUSE_ROUTES[0].methods: must be a non-empty array'],
    [[{ path: '/api', upstream: 'http://a', methods: ['GET', 'TRACE'] }], 'GATEHOUSE_ROUTES[0].methods: TRACE is never proxied'],
    [[{ path: '/api', upstream: 'http://a', timeoutSeconds: 0 }], 'GATEHOUSE_ROUTES[0].timeoutSeconds: 0 is not a whole number'],
    [[{ path: '/api', upstream: 'http://a', allowSetCookie: 'yes' }], 'GATEHOUSE_ROUTES[0].allowSetCookie: "yes" is not true or false'],
    [[{ path: '/api', upstream: 'http://a', websocket: 'yes' }], 'GATEHOUSE_ROUTES[0].websocket: "yes" is not true or false'],
    [[{ path: '/api', upstream: 'http://a', upstreams: 'http://b' }], 'GATEHOUSE_ROUTES[0]: unknown field "upstreams"'],
    [
      [{ path: '/api', upstream: 'http://a', resource: 'orders' }],
      'GATEHOUSE_ROUTES[0].resource: "orders" is not an absolute URI without a fragment',
    ],
    [
      [{ path: '/api', upstream: 'http://a', resource: 'https://o.example/#x' }],
      'GATEHOUSE_ROUTES[0].resource: "https://o.example/#x" is not an absolute URI',
    ],
    [
      [{ path: '/api', upstream: 'http://a', scope: 'orders:read' }],
      'GATEHOUSE_ROUTES[0].scope: orders:read not among GATEHOUSE_SCOPES — add it there',
    ],
    [[{ path: '/api', upstream: 'http://a', scope: 'a"b' }], 'GATEHOUSE_ROUTES[0].scope: "a\\"b" is not a space-separated list of scopes'],
    [
      [{ path: '/api', upstream: 'http://a', token: 'none', resource: 'https://o.example/' }],
      'GATEHOUSE_ROUTES[0].token: "none" sends no token',
    ],
    [
      [
        { path: '/api', upstream: 'http://a' },
        { path: '/api', upstream: 'http://b' },
      ],
      'GATEHOUSE_ROUTES[1].path: "/api" is used by an earlier route',
    ],
  ])('refuses %j', (raw, expected) => {
    const { problems } = parse(raw);
    expect(problems.some((p) => p.startsWith(expected))).toBe(true);
  });

  it('reports every problem of every route at once, one line each', () => {
    const { problems } = parse([{ path: 'x', upstream: 'y', token: 'z' }, { path: '/api' }]);
    expect(problems).toHaveLength(4);
  });
});

describe('RouteTable.match', () => {
  const { routes } = parse([
    { path: '/api', upstream: 'http://default' },
    { path: '/api/orders', upstream: 'http://orders' },
    { path: '/api/orders/archive', upstream: 'http://archive' },
  ]);
  const table = new RouteTable(routes);
  const at = (relative: string) => {
    const m = table.match(relative);
    return m && [m.route.path, m.rest];
  };

  it.each([
    ['/orders', ['/api/orders', '/']],
    ['/orders?x=1', ['/api/orders', '/?x=1']],
    ['/orders/', ['/api/orders', '/']],
    ['/orders/7', ['/api/orders', '/7']],
    ['/orders/archive/2020?y', ['/api/orders/archive', '/2020?y']],
    ['/ordersX', ['/api', '/ordersX']],
    ['/orders-archive', ['/api', '/orders-archive']],
    ['/', ['/api', '/']],
    ['/other/1', ['/api', '/other/1']],
  ])('routes %s to %j (segment boundaries, the longest wins)', (relative, expected) => {
    expect(at(relative)).toEqual(expected);
  });

  it('matches nothing outside its routes', () => {
    const only = new RouteTable(parse([{ path: '/api/orders', upstream: 'http://orders' }]).routes);
    expect(only.match('/ordersX')).toBeUndefined();
    expect(only.match('/')).toBeUndefined();
    expect(only.match('/orders/1')?.rest).toBe('/1');
  });
});
