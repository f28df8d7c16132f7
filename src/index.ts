/** Public API for embedding Gatehouse. */
export { createGatehouse, type Gatehouse, type GatehouseDeps } from './gatehouse';
export { loadConfig, validate, ConfigError } from './config/loadConfig';
export type { Config, GatehouseOptions } from './config/schema';
export { createLogger, type Logger } from './log/logger';
export { guardServer } from './http/serverGuards';
