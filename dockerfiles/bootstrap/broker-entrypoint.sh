#!/bin/sh
# Starts the tansu broker, and a proxy for clients outside the container
# network when HOST_ADVERTISED_LISTENER_URL is set. Exits when either exits.
set -eu

if [ -n "${HOST_ADVERTISED_LISTENER_URL:-}" ]; then
    origin_port="${LISTENER_URL##*:}"
    tansu proxy \
        --listener-url tcp://0.0.0.0:9093 \
        --advertised-listener-url "$HOST_ADVERTISED_LISTENER_URL" \
        --origin-url "tcp://127.0.0.1:${origin_port}" &
    proxy=$!
    tansu broker "$@" &
    broker=$!
    trap 'kill -TERM "$broker" "$proxy" 2>/dev/null' TERM INT
    # Whichever ends first ends the container.
    while kill -0 "$broker" 2>/dev/null && kill -0 "$proxy" 2>/dev/null; do
        sleep 1
    done
    kill -TERM "$broker" "$proxy" 2>/dev/null || true
    wait
    exit 1
fi
exec tansu broker "$@"
