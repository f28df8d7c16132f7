/** Public API for embedding Gatehouse. */
import './jestEsm';
import { createGatehouse as wire, type Gatehouse, type GatehouseDeps } from './gatehouse';
import type { Config, GatehouseOptions as Settings } from './config/schema';

export type { Gatehouse, GatehouseDeps } from './gatehouse';
export { loadConfig, validate, ConfigError } from './config/loadConfig';
export type { Config } from './config/schema';
export { createLogger, type Logger } from './log/logger';
export { guardServer } from './http/serverGuards';

/** How Gatehouse authenticates at the IdP's token endpoint: a client secret, or a private key (RFC 7523). */
export type ClientCredentials =
  | {
      /** default 'client_secret_basic' */
      clientAuth?: 'client_secret_basic' | 'client_secret_post';
      /** The client secret registered at the IdP. */
      clientSecret: string;
      clientPrivateKey?: string;
    }
  | {
      clientAuth: 'private_key_jwt';
      /** PEM (PKCS#8) private key: the key itself or a path to it. */
      clientPrivateKey: string;
      clientSecret?: string;
    };

/** Where /api goes: one upstream (the default route), or a route table (then `upstream` is optional). */
export type ApiUpstreams =
  | {
      /** Base URL for /api/*: `/api/x?y` → `<upstream>/x?y`. */
      upstream: string;
      routes?: Settings['routes'];
    }
  | {
      upstream?: string;
      /** The API routes (or their JSON as a string). */
      routes: NonNullable<Settings['routes']>;
    };

/**
 * What createGatehouse() takes: the settings of docs/configuration.md by option name, strings or numbers as in
 * the environment. Required: issuer, clientId, publicUrl and sessionSecret; clientSecret, or clientPrivateKey
 * with clientAuth 'private_key_jwt'; upstream, unless routes are given.
 */
export type GatehouseOptions = Omit<
  Settings,
  'issuer' | 'clientId' | 'publicUrl' | 'sessionSecret' | 'clientAuth' | 'clientSecret' | 'clientPrivateKey' | 'upstream' | 'routes'
> &
  Required<Pick<Settings, 'issuer' | 'clientId' | 'publicUrl' | 'sessionSecret'>> &
  ClientCredentials &
  ApiUpstreams;

/**
 * Validates `options` (a ConfigError lists every problem, naming each option), discovers the IdP and wires the
 * gateway: `request(gatehouse.frontDoor)` in supertest, `http.createServer(gatehouse.frontDoor)` to serve it.
 * A Config from loadConfig() is used as it is.
 */
export const createGatehouse: (options: GatehouseOptions | Config, deps?: GatehouseDeps) => Promise<Gatehouse> = wire;
