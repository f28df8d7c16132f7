# Gatehouse container image.
#   docker build -t gatehouse .
#   docker run --rm -p 8080:8080 -p 9464:9464 --env-file .env gatehouse      (variables: config/example.env)
# Written for both BuildKit and the legacy builder (no RUN --mount), so it builds wherever `docker build` runs.

ARG NODE_IMAGE=node:24-slim

# --- build: all dependencies (incl. TypeScript), compile to dist/ --------------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /app
ENV npm_config_fund=false \
    npm_config_audit=false \
    npm_config_update_notifier=false
# Manifests first, so the dependency layer is reused while only the sources change.
COPY package.json package-lock.json ./
# Installs the devDependency `node` too (it is what npm scripts run on outside Docker); harmless here, where
# the image's own Node 24 is the same major, and it never reaches the runtime stage.
RUN npm ci
COPY . .
RUN npm run build

# --- runtime: production dependencies + compiled output only ------------------------------------------
FROM ${NODE_IMAGE} AS runtime
WORKDIR /app
ENV NODE_ENV=production \
    npm_config_fund=false \
    npm_config_audit=false \
    npm_config_update_notifier=false
COPY package.json package-lock.json ./
# --omit=dev leaves out TypeScript, jest, oidc-provider and the `node` package; --ignore-scripts because no
# production dependency needs an install script (and none should run in the final image).
RUN npm ci --omit=dev --ignore-scripts \
 && npm cache clean --force
COPY --from=build /app/dist ./dist

# Code and dependencies stay owned by root: the process can read them but not rewrite them.
USER node

# 8080: the gateway (GATEHOUSE_PORT). 9464: the admin port with /metrics (GATEHOUSE_METRICS_PORT; keep it
# off the public network).
EXPOSE 8080 9464

# slim images have no curl/wget; Node 24's global fetch does the probe. Keep in step with GATEHOUSE_PORT.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.GATEHOUSE_PORT || 8080) + '/healthz', { signal: AbortSignal.timeout(4000) }).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]

# Exec form: node is PID 1 and receives SIGTERM itself (main.ts drains and exits). As PID 1 it gets no
# default signal handlers, so a signal main.ts does not handle is ignored; `docker run --init` adds a reaper.
CMD ["node", "dist/src/main.js"]
