#!/bin/sh
set -eu
if [ -n "${NGINX_ENTRYPOINT_LOCAL_RESOLVERS:-}" ]; then
    # The first only: podman lists its network's DNS first, then the host's, which do
    # not know the services' names (nginx asks its resolvers in turn).
    NGINX_LOCAL_RESOLVERS=$(awk '/^nameserver/ { print $2; exit }' /etc/resolv.conf)
    export NGINX_LOCAL_RESOLVERS
fi
# Only the environment's variables are replaced: nginx's own ($host, ...) stay.
defined=$(env | sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/${\1}/p' | tr '\n' ' ')
for template in /etc/nginx/templates/*.template; do
    [ -e "$template" ] || continue
    envsubst "$defined" < "$template" > "/etc/nginx/conf.d/$(basename "$template" .template)"
done
exec "$@"
