# Gatehouse container image.
#   docker build -t gatehouse .
#   docker run --rm -p 8080:8080 -p 9464:9464 --env-file .env gatehouse      (variables: config/example.env)
# Written for both BuildKit and the legacy builder (no RUN --mount), so it builds wherever `docker build` runs.
# `npm run docker:smoke` (scripts/docker-smoke.sh) checks this file without a container engine: COPY sources,
# .dockerignore, the runtime stage's user, entry point and HEALTHCHECK. More in docs/operations.md.

# Not pinned by digest: no registry was reachable where this file was written, and a digest copied from elsewhere
# could not be checked (nor told apart from a single-platform one). To pin, take the multi-platform index digest
#   docker buildx imagetools inspect node:24-slim        (the "Digest:" line)
# and build with --build-arg NODE_IMAGE=node:24-slim@sha256:<digest>, or write it here.
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

# Exec form, no npm or shell in between: node is PID 1 and receives SIGTERM itself (main.ts turns /readyz 503,
# drains for up to GATEHOUSE_SHUTDOWN_SECONDS and exits 0). As PID 1 it has no default signal handlers, so a
# signal main.ts does not handle (it handles SIGTERM and SIGINT) is ignored; it starts no child processes, so
# there are no zombies to reap and no tini is needed (`docker run --init` adds one if wanted).
# `docker stop` sends SIGKILL after 10 s unless told otherwise: give it more than GATEHOUSE_SHUTDOWN_SECONDS
# (`docker stop -t` / `docker run --stop-timeout`; Kubernetes: terminationGracePeriodSeconds, default 30).
STOPSIGNAL SIGTERM
CMD ["node", "dist/src/main.js"]
