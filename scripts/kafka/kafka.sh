# Apache Kafka for the local stack, sourced by scripts/stack (which defines log, die,
# apt_install, TOOLS_DIR, STACK_DIR, KAFKA_HOST and KAFKA_PORT). See docs/local-stack.md.
#
# The broker is Apache Kafka itself, in KRaft mode (no ZooKeeper), run from its Maven Central
# jars: scripts/kafka/pom.xml names them, `maven-dependency-plugin:copy-dependencies` copies
# them into the tools cache once per machine, and each node runs `java kafka.Kafka` with a
# server.properties written here. Every node is a combined broker+controller.
#
# A cluster set lives in one directory under the stack dir, named after its shape:
#   kafka            one node            (the demo, the test suite)
#   kafka-3          three nodes         (replication 3, min.insync.replicas=2: fault tests)
#   kafka-secure     one node plus a SASL_SSL listener (SCRAM, a throwaway CA)
# with node-<id>/{server.properties,data,kafka.log,kafka.pid} per node.
#
# Ports: node <id> listens on KAFKA_PORT + 10*(id-1) for PLAINTEXT, +1 for its controller,
# and +2 for SASL_SSL when secure: 9092/9093(/9094), 9102/9103, 9112/9113.

KAFKA_VERSION=${ORDERFLOW_KAFKA_VERSION:-4.1.1}
KAFKA_LIBS=$TOOLS_DIR/kafka-$KAFKA_VERSION/libs
KAFKA_SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# 512 MB per node is plenty for tests and the benchmarks; G1 with short pauses as upstream's
# kafka-run-class.sh does.
KAFKA_HEAP=${ORDERFLOW_KAFKA_HEAP:-512m}
KAFKA_START_TIMEOUT=${ORDERFLOW_KAFKA_START_TIMEOUT:-90}   # seconds without progress
KAFKA_START_LIMIT=${ORDERFLOW_KAFKA_START_LIMIT:-900}       # seconds in all
KAFKA_SCRAM_USER=orderflow

java_major() {
    command -v java >/dev/null || { echo 0; return; }
    java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = \([0-9]*\).*/\1/p' | head -n 1
}

# Java 17+ and Maven from Debian when missing, then the broker's jars into the tools cache.
kafka_install() {
    local major
    major=$(java_major)
    if [ "${major:-0}" -lt 17 ]; then
        apt_install openjdk-17-jre-headless
        major=$(java_major)
        [ "${major:-0}" -ge 17 ] || die "Apache Kafka $KAFKA_VERSION needs Java 17 or newer; \`java\` is version ${major:-missing} \
(install openjdk-17-jre-headless, or put a newer java first on PATH)"
    fi
    command -v mvn >/dev/null || apt_install maven
    command -v mvn >/dev/null || die "Maven (mvn) is missing after installing the Debian package maven"
    [ -f "$KAFKA_LIBS/.complete" ] && return 0
    local work=$TOOLS_DIR/kafka-$KAFKA_VERSION.tmp install_log=$TOOLS_DIR/kafka-$KAFKA_VERSION-install.log
    log "installing Apache Kafka $KAFKA_VERSION from Maven Central into $KAFKA_LIBS (log: $install_log)"
    rm -rf "$work" && mkdir -p "$work"
    cp "$KAFKA_SCRIPTS/pom.xml" "$work/pom.xml"
    if ! (cd "$work" && mvn -B -q -Dkafka.version="$KAFKA_VERSION" \
            org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies \
            -DincludeScope=runtime -DoutputDirectory="$work/libs" >"$install_log" 2>&1); then
        tail -n 30 "$install_log" >&2
        die "Maven could not fetch Apache Kafka $KAFKA_VERSION (full log: $install_log)"
    fi
    ls "$work/libs"/kafka_2.13-"$KAFKA_VERSION".jar >/dev/null 2>&1 \
        || die "Maven finished but $work/libs has no kafka_2.13-$KAFKA_VERSION.jar (log: $install_log)"
    rm -rf "$(dirname "$KAFKA_LIBS")" && mkdir -p "$(dirname "$KAFKA_LIBS")"
    mv "$work/libs" "$KAFKA_LIBS" && rm -rf "$work"
    touch "$KAFKA_LIBS/.complete"
}

kafka_java() { java -cp "$KAFKA_LIBS/*" "$@"; }

# kafka_cluster_dir NODES SECURE
kafka_cluster_dir() {
    local name=kafka
    [ "$1" -gt 1 ] && name=$name-$1
    [ "$2" = 1 ] && name=$name-secure
    echo "$STACK_DIR/$name"
}

kafka_port() { echo $((KAFKA_PORT + 10 * ($1 - 1) + $2)); }           # NODE OFFSET(0 plain, 1 controller, 2 sasl_ssl)
kafka_bootstrap() {                                                    # NODES [OFFSET]
    local id out=""
    for id in $(seq 1 "$1"); do out="$out${out:+,}$KAFKA_HOST:$(kafka_port "$id" "${2:-0}")"; done
    echo "$out"
}

kafka_node_pid() {                                                     # DIR NODE -> pid if running
    local pidfile=$1/node-$2/kafka.pid pid
    [ -f "$pidfile" ] || return 1
    pid=$(cat "$pidfile")
    kill -0 "$pid" 2>/dev/null && grep -q 'kafka.Kafka' "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}

kafka_nodes_of() { ls -d "$1"/node-* 2>/dev/null | sed 's/.*node-//' | sort -n; }

# The cluster dirs under the stack dir with at least one live node.
kafka_running_dirs() {
    local dir id
    for dir in "$STACK_DIR"/kafka "$STACK_DIR"/kafka-*; do
        [ -d "$dir" ] || continue
        for id in $(kafka_nodes_of "$dir"); do
            if kafka_node_pid "$dir" "$id" >/dev/null; then echo "$dir"; break; fi
        done
    done
}

port_in_use() { [ -n "$(ss -H -ltn "sport = :$1" 2>/dev/null)" ]; }
port_user() { ss -H -ltnp "sport = :$1" 2>/dev/null | sed -n 's/.*users:((\(.*\)))/\1/p' | head -n 1; }

kafka_make_tls() {                                                     # DIR: a throwaway CA and the broker's keystore
    local tls=$1/tls pass
    mkdir -p "$tls" && chmod 700 "$tls"
    command -v openssl >/dev/null || apt_install openssl
    pass=$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')
    (
        cd "$tls"
        openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 30 \
            -subj "/CN=orderflow local stack CA" 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -keyout broker.key -out broker.csr -subj "/CN=$KAFKA_HOST" 2>/dev/null
        printf 'subjectAltName=IP:%s,DNS:localhost\n' "$KAFKA_HOST" >san.ext
        openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out broker.pem -days 30 \
            -extfile san.ext 2>/dev/null
        openssl pkcs12 -export -in broker.pem -inkey broker.key -certfile ca.pem -out broker.p12 \
            -passout "pass:$pass"
    ) || die "could not make the local CA and broker certificate in $tls"
    echo "$pass" >"$tls/keystore.password"
}

# Write every node's server.properties and format its storage, once per cluster dir.
kafka_configure() {                                                    # DIR NODES SECURE
    local dir=$1 nodes=$2 secure=$3 id rf=1 misr=1 voters="" cluster_id
    if [ -f "$dir/formatted" ]; then
        local made_for
        made_for=$(cat "$dir/port" 2>/dev/null || echo 9092)
        [ "$made_for" = "$KAFKA_PORT" ] || die "the broker set in $dir was made for port $made_for; \
use ORDERFLOW_KAFKA_PORT=$made_for, or remove $dir to make it anew on $KAFKA_PORT"
        return 0
    fi
    rm -rf "$dir" && mkdir -p "$dir" && chmod 700 "$dir"
    echo "$KAFKA_PORT" >"$dir/port"
    if [ "$nodes" -gt 1 ]; then
        rf=3; misr=2
        [ "$nodes" -ge 3 ] || { rf=$nodes; misr=1; }
        for id in $(seq 1 "$nodes"); do voters="$voters${voters:+,}$id@$KAFKA_HOST:$(kafka_port "$id" 1)"; done
    fi
    local scram=() password="" kspass=""
    if [ "$secure" = 1 ]; then
        kafka_make_tls "$dir"
        kspass=$(cat "$dir/tls/keystore.password")
        password=$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')
        scram=(--add-scram "SCRAM-SHA-256=[name=\"$KAFKA_SCRAM_USER\",password=\"$password\"]"
               --add-scram "SCRAM-SHA-512=[name=\"$KAFKA_SCRAM_USER\",password=\"$password\"]")
        # What a client needs, in the environment names every orderflow binary reads.
        # The SCRAM values are quoted: with them unquoted, Kafka 4.1's StorageTool formatted
        # without complaint but every login then failed with "invalid credentials" (seen here).
        (umask 077; cat >"$dir/client.env" <<EOF
export KAFKA_BROKERS=$(kafka_bootstrap "$nodes" 2)
export KAFKA_SECURITY_PROTOCOL=SASL_SSL
export KAFKA_SASL_MECHANISMS=SCRAM-SHA-256
export KAFKA_SASL_USERNAME=$KAFKA_SCRAM_USER
export KAFKA_SASL_PASSWORD=$password
export KAFKA_SSL_CA_LOCATION=$dir/tls/ca.pem
EOF
)
    fi
    cluster_id=$(kafka_java kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
    [ -n "$cluster_id" ] || die "kafka.tools.StorageTool random-uuid printed nothing (is $KAFKA_LIBS complete?)"
    for id in $(seq 1 "$nodes"); do
        local node=$dir/node-$id listeners advertised
        mkdir -p "$node/data"
        listeners="PLAINTEXT://$KAFKA_HOST:$(kafka_port "$id" 0),CONTROLLER://$KAFKA_HOST:$(kafka_port "$id" 1)"
        advertised="PLAINTEXT://$KAFKA_HOST:$(kafka_port "$id" 0)"
        if [ "$secure" = 1 ]; then
            listeners="$listeners,SASL_SSL://$KAFKA_HOST:$(kafka_port "$id" 2)"
            advertised="$advertised,SASL_SSL://$KAFKA_HOST:$(kafka_port "$id" 2)"
        fi
        {
            echo "# Written by scripts/stack (scripts/kafka/kafka.sh); rewritten when the cluster is made anew."
            echo "process.roles=broker,controller"
            echo "node.id=$id"
            echo "listeners=$listeners"
            echo "advertised.listeners=$advertised"
            echo "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL"
            echo "controller.listener.names=CONTROLLER"
            echo "inter.broker.listener.name=PLAINTEXT"
            if [ "$nodes" -gt 1 ]; then
                echo "controller.quorum.voters=$voters"
                # Fence a kill -9'd broker after 3 s instead of 9 s, so leadership moves quickly.
                echo "broker.heartbeat.interval.ms=500"
                echo "broker.session.timeout.ms=3000"
            else
                echo "controller.quorum.bootstrap.servers=$KAFKA_HOST:$(kafka_port 1 1)"
            fi
            echo "log.dirs=$node/data"
            echo "default.replication.factor=$rf"
            echo "min.insync.replicas=$misr"
            echo "offsets.topic.replication.factor=$rf"
            echo "transaction.state.log.replication.factor=$rf"
            echo "transaction.state.log.min.isr=$misr"
            echo "share.coordinator.state.topic.replication.factor=$rf"
            echo "share.coordinator.state.topic.min.isr=$misr"
            # A group's first member starts at once instead of waiting 3 s for others.
            echo "group.initial.rebalance.delay.ms=0"
            # Topics are created on purpose (scripts/stack up, orderflow topics create, tests).
            echo "auto.create.topics.enable=false"
            # Two cores: fewer threads than the defaults (3 network, 8 I/O).
            echo "num.network.threads=2"
            echo "num.io.threads=4"
            if [ "$secure" = 1 ]; then
                echo "sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512"
                echo "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;"
                echo "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;"
                echo "listener.name.sasl_ssl.ssl.keystore.type=PKCS12"
                echo "listener.name.sasl_ssl.ssl.keystore.location=$dir/tls/broker.p12"
                echo "listener.name.sasl_ssl.ssl.keystore.password=$kspass"
            fi
        } >"$node/server.properties"
        chmod 600 "$node/server.properties"
        local format=(kafka.tools.StorageTool format -t "$cluster_id" -c "$node/server.properties" "${scram[@]}")
        [ "$nodes" -eq 1 ] && format+=(--standalone)
        kafka_java "${format[@]}" >"$node/format.log" 2>&1 \
            || { cat "$node/format.log" >&2; die "kafka.tools.StorageTool format failed for node $id (log: $node/format.log)"; }
    done
    echo "$nodes" >"$dir/formatted"
}

kafka_start_node() {                                                   # DIR NODE
    local dir=$1 id=$2 node=$1/node-$2 offset port
    kafka_node_pid "$dir" "$id" >/dev/null && return 0
    for offset in 0 1 2; do
        [ "$offset" = 2 ] && ! grep -q SASL_SSL:// "$node/server.properties" && continue
        port=$(kafka_port "$id" "$offset")
        if port_in_use "$port"; then
            die "port $KAFKA_HOST:$port is already taken (by $(port_user "$port" || true)); \
stop it, or start the stack on another port with ORDERFLOW_KAFKA_PORT=<port> (and KAFKA_BROKERS to match)"
        fi
    done
    [ -f "$node/kafka.log" ] && mv "$node/kafka.log" "$node/kafka.log.1"
    (exec setsid java -Xms"$KAFKA_HEAP" -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$KAFKA_SCRIPTS/log4j2.properties" \
        -cp "$KAFKA_LIBS/*" kafka.Kafka "$node/server.properties" </dev/null >"$node/kafka.log" 2>&1) &
    echo $! >"$node/kafka.pid"
}

# A node that restarts on a data directory with thousands of partitions spends minutes loading
# their logs, writing a line per step. So the deadline counts from the node's last log line:
# it fails after KAFKA_START_TIMEOUT seconds without progress (or KAFKA_START_LIMIT in all).
kafka_wait_node() {                                                    # DIR NODE
    local dir=$1 id=$2 node=$1/node-$2 deadline=$((SECONDS + KAFKA_START_TIMEOUT))
    local limit=$((SECONDS + KAFKA_START_LIMIT)) size last=-1
    while [ $SECONDS -lt $deadline ] && [ $SECONDS -lt $limit ]; do
        grep -q 'Kafka Server started' "$node/kafka.log" 2>/dev/null && return 0
        if ! kafka_node_pid "$dir" "$id" >/dev/null; then
            tail -n 30 "$node/kafka.log" >&2
            die "Apache Kafka node $id exited during start; log: $node/kafka.log"
        fi
        size=$(stat -c %s "$node/kafka.log" 2>/dev/null || echo 0)
        if [ "$size" != "$last" ]; then
            last=$size
            deadline=$((SECONDS + KAFKA_START_TIMEOUT))
        fi
        sleep 0.2
    done
    tail -n 30 "$node/kafka.log" >&2
    if [ $SECONDS -ge $limit ]; then
        die "Apache Kafka node $id did not start within ${KAFKA_START_LIMIT}s; log: $node/kafka.log"
    fi
    die "Apache Kafka node $id made no progress for ${KAFKA_START_TIMEOUT}s while starting; log: $node/kafka.log"
}

kafka_stop_node() {                                                    # DIR NODE [SIGNAL]
    local dir=$1 id=$2 signal=${3:-TERM} pid i
    pid=$(kafka_node_pid "$dir" "$id") || return 0
    kill "-$signal" "$pid" 2>/dev/null || true
    # A controlled shutdown moves leadership away first; give it time, then insist.
    for i in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        log "Kafka node $id ignored SIG$signal for 30s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
        for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$dir/node-$id/kafka.pid"
}

# Start (configure and format if new) a cluster of NODES and wait until every node is up.
kafka_up() {                                                           # NODES SECURE
    local nodes=$1 secure=$2 dir running id
    dir=$(kafka_cluster_dir "$nodes" "$secure")
    for running in $(kafka_running_dirs); do
        [ "$running" = "$dir" ] && continue
        die "another broker set runs from $running; stop it first (scripts/stack down)"
    done
    if [ -f "$dir/formatted" ] && [ "$(cat "$dir/formatted")" != "$nodes" ]; then rm -rf "$dir"; fi
    kafka_configure "$dir" "$nodes" "$secure"
    local started=0
    for id in $(seq 1 "$nodes"); do
        if kafka_node_pid "$dir" "$id" >/dev/null; then continue; fi
        started=1
        kafka_start_node "$dir" "$id"
    done
    if [ $started = 0 ]; then
        log "Apache Kafka $KAFKA_VERSION already running ($nodes node(s), $(kafka_bootstrap "$nodes"))"
        return 0
    fi
    log "starting Apache Kafka $KAFKA_VERSION: $nodes node(s) at $(kafka_bootstrap "$nodes") (data and logs: $dir)"
    for id in $(seq 1 "$nodes"); do kafka_wait_node "$dir" "$id"; done
    [ "$secure" = 1 ] && log "SASL_SSL listener: source $dir/client.env for the client settings"
    return 0
}

kafka_down() {
    local dir id
    for dir in $(kafka_running_dirs); do
        log "stopping Apache Kafka in $dir"
        for id in $(kafka_nodes_of "$dir"); do kafka_stop_node "$dir" "$id" TERM & done
        wait
    done
}

kafka_status_lines() {                                                 # prints one line per running set; fails if none
    local dir id nodes found=1 pids
    for dir in $(kafka_running_dirs); do
        found=0
        nodes=$(cat "$dir/formatted" 2>/dev/null || echo 1)
        pids=""
        for id in $(kafka_nodes_of "$dir"); do
            pids="$pids node$id:$(kafka_node_pid "$dir" "$id" || echo down)"
        done
        echo "broker    running  Apache Kafka $KAFKA_VERSION  $nodes node(s)  $(kafka_bootstrap "$nodes")  pids$pids  dir $dir"
    done
    return $found
}
