/** Convenience re-exports: `import { startTestIdp, startUpstream, loginAs, reserveServer } from '.';` */
export * from './idp';
export * from './upstream';
export * from './login';
export { startRedisServer, findFreePort, pingRedis, findRedisServerBinary } from './redisServer';
export type { RedisServerHandle, StartRedisOptions } from './redisServer';
