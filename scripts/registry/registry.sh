# A Confluent-compatible Schema Registry for the local stack, sourced by scripts/stack (which
# defines log, die, TOOLS_DIR, STACK_DIR and port_in_use). See docs/local-stack.md.
#
# Apicurio Registry 3.0.x, the `all` assembly of io.apicurio:apicurio-registry-app from Maven
# Central (a Quarkus application; 3.0.x is the last line that runs on Java 17), downloaded once
# per machine into the tools cache and checked against its published SHA-1. It keeps its
# schemas in memory (an in-process H2 database, empty at every start), listens on
# 127.0.0.1:REGISTRY_PORT and speaks Confluent's REST API under /apis/ccompat/v7: that URL is
# what SCHEMA_REGISTRY_URL points at.

REGISTRY_VERSION=${ORDERFLOW_REGISTRY_VERSION:-3.0.9}
# The SHA-1 Maven Central publishes next to the assembly of the default version.
REGISTRY_SHA1_3_0_9=4deac01752711c32da5662e7b778b61c5e904746
REGISTRY_HOST=127.0.0.1
REGISTRY_PORT=${ORDERFLOW_REGISTRY_PORT:-18081}
REGISTRY_HOME=$TOOLS_DIR/apicurio-registry-$REGISTRY_VERSION
REGISTRY_DIR=$STACK_DIR/registry
REGISTRY_HEAP=${ORDERFLOW_REGISTRY_HEAP:-256m}
REGISTRY_START_TIMEOUT=${ORDERFLOW_REGISTRY_START_TIMEOUT:-180}
REGISTRY_URL="http://$REGISTRY_HOST:$REGISTRY_PORT/apis/ccompat/v7"

registry_install() {
    [ -f "$REGISTRY_HOME/.complete" ] && return 0
    local base=https://repo1.maven.org/maven2/io/apicurio/apicurio-registry-app/$REGISTRY_VERSION
    local file=apicurio-registry-app-$REGISTRY_VERSION-all.tar.gz work=$REGISTRY_HOME.tmp expected actual
    log "installing Apicurio Registry $REGISTRY_VERSION from Maven Central into $REGISTRY_HOME"
    rm -rf "$work" && mkdir -p "$work"
    curl -fsSL --retry 3 -o "$work/$file" "$base/$file" || die "could not download $base/$file"
    if [ "$REGISTRY_VERSION" = 3.0.9 ]; then
        expected=$REGISTRY_SHA1_3_0_9
    else
        expected=$(curl -fsSL --retry 3 "$base/$file.sha1" | cut -c1-40) || die "could not download $base/$file.sha1"
    fi
    actual=$(sha1sum "$work/$file" | cut -d' ' -f1)
    [ "$actual" = "$expected" ] || die "$file has SHA-1 $actual, Maven Central publishes $expected"
    # The assembly has no top-level directory: the runner jar next to lib/ and meta/.
    tar -xzf "$work/$file" -C "$work" && rm -f "$work/$file" || die "could not unpack $file"
    [ -f "$work/apicurio-registry-app-$REGISTRY_VERSION-runner.jar" ] || die "$file holds no runner jar"
    rm -rf "$REGISTRY_HOME" && mv "$work" "$REGISTRY_HOME"
    touch "$REGISTRY_HOME/.complete"
}

registry_pid() {
    local pid
    [ -f "$REGISTRY_DIR/registry.pid" ] || return 1
    pid=$(cat "$REGISTRY_DIR/registry.pid")
    kill -0 "$pid" 2>/dev/null && grep -q apicurio-registry-app "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}

registry_ready() { curl -fs -o /dev/null --max-time 2 "http://$REGISTRY_HOST:$REGISTRY_PORT/health/ready"; }

registry_up() {
    registry_install
    if registry_pid >/dev/null; then
        registry_ready && return 0
    elif port_in_use "$REGISTRY_PORT"; then
        die "port $REGISTRY_PORT is held by $(port_user "$REGISTRY_PORT"); set ORDERFLOW_REGISTRY_PORT to another port"
    else
        mkdir -p "$REGISTRY_DIR"
        log "starting Apicurio Registry $REGISTRY_VERSION at $REGISTRY_URL (in-memory; log: $REGISTRY_DIR/registry.log)"
        (
            cd "$REGISTRY_HOME"
            # Quarkus reads its settings from system properties; the JIT's first tier is
            # plenty for a registry that answers a few requests per test (it starts in half
            # the time).
            setsid java "-Xmx$REGISTRY_HEAP" -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
                -Dquarkus.http.host="$REGISTRY_HOST" -Dquarkus.http.port="$REGISTRY_PORT" \
                -jar "apicurio-registry-app-$REGISTRY_VERSION-runner.jar" \
                >"$REGISTRY_DIR/registry.log" 2>&1 </dev/null &
            echo $! >"$REGISTRY_DIR/registry.pid"
        )
    fi
    local waited=0
    until registry_ready; do
        registry_pid >/dev/null || { tail -n 30 "$REGISTRY_DIR/registry.log" >&2; die "Apicurio Registry exited while starting"; }
        [ $waited -lt "$REGISTRY_START_TIMEOUT" ] || die "Apicurio Registry was not ready within ${REGISTRY_START_TIMEOUT}s (log: $REGISTRY_DIR/registry.log)"
        sleep 1; waited=$((waited + 1))
    done
    log "Apicurio Registry ready at $REGISTRY_URL"
}

registry_down() {
    local pid waited=0
    pid=$(registry_pid) || return 0
    log "stopping Apicurio Registry (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && [ $waited -lt 30 ]; do sleep 1; waited=$((waited + 1)); done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$REGISTRY_DIR/registry.pid"
}
