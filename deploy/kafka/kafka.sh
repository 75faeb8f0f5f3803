#!/usr/bin/env bash
# A single-node Apache Kafka (KRaft, broker+controller in one JVM) for
# development, the demo and the broker tests.
#
#   deploy/kafka/kafka.sh up|down|status|restart|logs|clean
#
# The jars come from Maven Central through Maven (org.apache.kafka:kafka_2.13
# and its runtime dependencies, plus log4j's SLF4J binding so the broker logs)
# and are cached outside the repo, in
# ${XDG_CACHE_HOME:-$HOME/.cache}/shopwatch/kafka-$KAFKA_VERSION, so only the
# first `up` on a machine downloads anything.
#
# Kafka version: 4.1.2 (default; override with KAFKA_VERSION). Kafka 4.x
# removed the pre-2.1 protocol versions (KIP-896); aiokafka >= 0.13 negotiates
# every request version with ApiVersions, and faust-streaming 0.15.3 on
# aiokafka 0.14 builds its own Metadata/CreateTopics requests unversioned, so
# they negotiate too. Checked on 4.0.2, 4.1.2, 4.2.2, 4.3.1 and 4.4.0: produce,
# consume, classic consumer groups with faust's assignor, offset commits,
# faust's creation of its internal topics (leader, table changelog,
# repartition), RocksDB table recovery from the changelog, and
# tests/broker/test_broker_ingest.py. 4.1.2 is the conservative pick: a line with two
# bug-fix releases, no newer protocol removals than 4.0.
#
# Environment:
#   KAFKA_BOOTSTRAP          an existing cluster: `up` starts nothing
#   KAFKA_PORT               broker port on 127.0.0.1 (default 9092)
#   KAFKA_CONTROLLER_PORT    KRaft controller port (default KAFKA_PORT+1)
#   KAFKA_VERSION            Apache Kafka version from Maven Central (default below)
#   KAFKA_DIR                state dir: data, config, log, pidfile (default <repo>/var/kafka)
#   KAFKA_CACHE_DIR          where the jars are cached (default above)
#   KAFKA_HEAP               max heap (default 512m)
#   KAFKA_PARTITIONS         num.partitions for auto-created topics (default 4)
#   KAFKA_START_TIMEOUT      seconds to wait for a usable broker (default 180)
set -euo pipefail

KAFKA_VERSION=${KAFKA_VERSION:-4.1.2}
SCALA_VERSION=2.13
DEPENDENCY_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PORT=${KAFKA_PORT:-9092}
CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-$((PORT + 1))}
DIR=${KAFKA_DIR:-$ROOT/var/kafka}
CACHE=${KAFKA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/shopwatch/kafka-$KAFKA_VERSION}
LIBS=$CACHE/libs
HEAP=${KAFKA_HEAP:-512m}
PARTITIONS=${KAFKA_PARTITIONS:-4}
START_TIMEOUT=${KAFKA_START_TIMEOUT:-180}
PIDFILE=$DIR/kafka.pid
LOG=$DIR/kafka.log
CONFIG=$DIR/server.properties
DATA=$DIR/data
BOOTSTRAP=127.0.0.1:$PORT

say() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

java_bin() {
    if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
        echo "$JAVA_HOME/bin/java"
    else
        command -v java || die "java (17+) not found"
    fi
}

# --- jars ------------------------------------------------------------------

fetch() {
    [[ -f "$LIBS/.complete" ]] && return 0
    command -v mvn >/dev/null || die "mvn not found (needed once, to fetch Kafka $KAFKA_VERSION from Maven Central)"
    mkdir -p "$(dirname "$CACHE")"
    exec 8>"$CACHE.lock"
    flock -w 900 8 || die "timed out waiting for another fetch of Kafka $KAFKA_VERSION"
    if [[ -f "$LIBS/.complete" ]]; then exec 8>&-; return 0; fi
    say "fetching Apache Kafka $KAFKA_VERSION (kafka_$SCALA_VERSION) from Maven Central into $CACHE"
    local work
    work=$(mktemp -d "$(dirname "$CACHE")/fetch.XXXXXX")
    cat >"$work/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.shopwatch</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_$SCALA_VERSION</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
  </dependencies>
</project>
EOF
    if ! mvn -B -q -f "$work/pom.xml" "$DEPENDENCY_PLUGIN:copy-dependencies" \
            -DincludeScope=runtime -DoutputDirectory="$work/libs" >"$work/mvn.log" 2>&1; then
        cat "$work/mvn.log" >&2
        rm -rf "$work"
        die "mvn could not fetch org.apache.kafka:kafka_$SCALA_VERSION:$KAFKA_VERSION"
    fi
    # kafka_2.13's pom has log4j-core and slf4j-api but not the binding between
    # them (the binary distribution ships it): without it the broker logs nothing.
    local core log4j slf4j binding
    core=$(cd "$work/libs" && ls log4j-core-*.jar 2>/dev/null | head -n1 || true)
    slf4j=$(cd "$work/libs" && ls slf4j-api-*.jar 2>/dev/null | head -n1 || true)
    if [[ -n "$core" ]]; then
        log4j=${core#log4j-core-}; log4j=${log4j%.jar}
        case "$slf4j" in
            slf4j-api-1.*) binding=log4j-slf4j-impl ;;
            *) binding=log4j-slf4j2-impl ;;
        esac
        if ! mvn -B -q -f "$work/pom.xml" "$DEPENDENCY_PLUGIN:copy" \
                -Dartifact="org.apache.logging.log4j:$binding:$log4j" \
                -DoutputDirectory="$work/libs" >>"$work/mvn.log" 2>&1; then
            cat "$work/mvn.log" >&2
            rm -rf "$work"
            die "mvn could not fetch org.apache.logging.log4j:$binding:$log4j"
        fi
    fi
    [[ -f "$work/libs/kafka_$SCALA_VERSION-$KAFKA_VERSION.jar" ]] || { rm -rf "$work"; die "kafka jar missing after fetch"; }
    echo "$KAFKA_VERSION" >"$work/libs/.complete"
    rm -rf "$LIBS"
    mkdir -p "$CACHE"
    mv "$work/libs" "$LIBS"
    rm -rf "$work"
    exec 8>&-
    say "cached $(find "$LIBS" -name '*.jar' | wc -l) jars"
}

# A tiny Java client (the Admin API of the same kafka-clients jar) that proves
# the broker is usable, not just listening: cluster metadata, topic list, and
# a group-coordinator lookup (which creates __consumer_offsets, so the first
# consumer group of a test doesn't wait for it).
probe_class() {
    local dir=$CACHE/probe
    mkdir -p "$dir"
    cat >"$dir/Probe.java.new" <<'EOF'
import java.util.List;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.common.errors.GroupIdNotFoundException;

public class Probe {
    public static void main(String[] args) throws Exception {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "5000");
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, args[1]);
        long t = Long.parseLong(args[1]);
        try (Admin admin = Admin.create(p)) {
            var cluster = admin.describeCluster();
            String id = cluster.clusterId().get(t, TimeUnit.MILLISECONDS);
            int nodes = cluster.nodes().get(t, TimeUnit.MILLISECONDS).size();
            int topics = admin.listTopics().names().get(t, TimeUnit.MILLISECONDS).size();
            try {
                admin.describeConsumerGroups(List.of("shopwatch-probe")).all().get(t, TimeUnit.MILLISECONDS);
            } catch (ExecutionException e) {
                // The coordinator answered; Kafka 4 reports an unknown group as an error.
                if (!(e.getCause() instanceof GroupIdNotFoundException)) throw e;
            }
            System.out.println("cluster " + id + ", " + nodes + " node(s), " + topics + " topic(s)");
        }
    }
}
EOF
    if [[ -f "$dir/Probe.class" ]] && cmp -s "$dir/Probe.java.new" "$dir/Probe.java"; then
        rm -f "$dir/Probe.java.new"
        return 0
    fi
    mv -f "$dir/Probe.java.new" "$dir/Probe.java"
    rm -f "$dir/Probe.class"
    if command -v javac >/dev/null; then
        javac -nowarn -cp "$LIBS/*" -d "$dir" "$dir/Probe.java" >/dev/null 2>&1 || true
    fi
}

# probe BOOTSTRAP TIMEOUT_MS: exit 0 when the broker answers metadata requests
probe() {
    probe_class
    local cp=$LIBS/*:$CACHE/probe main=Probe java
    java=$(java_bin)
    [[ -f "$CACHE/probe/Probe.class" ]] || main=$CACHE/probe/Probe.java
    timeout $(( $2 / 1000 + 20 )) "$java" -Xmx128m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
        -Dlog4j2.configurationFile="$CACHE/probe/log4j2.properties" \
        -cp "$cp" "$main" "$1" "$2" 2>"$CACHE/probe/last.err"
}

# --- the broker --------------------------------------------------------------

write_config() {
    mkdir -p "$DIR" "$DATA"
    cat >"$CONFIG" <<EOF
# Generated by deploy/kafka/kafka.sh; edits are overwritten on the next \`up\`.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DATA

# One node: every internal topic has one replica.
num.partitions=$PARTITIONS
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
auto.create.topics.enable=true
delete.topic.enable=true
group.initial.rebalance.delay.ms=0

# A small machine (2 cores).
num.network.threads=2
num.io.threads=2
background.threads=2
num.recovery.threads.per.data.dir=1
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=16777216
log.retention.hours=168
log.segment.bytes=268435456
EOF
    cat >"$DIR/log4j2.properties" <<'EOF'
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = WARN
EOF
    mkdir -p "$CACHE/probe"
    cat >"$CACHE/probe/log4j2.properties" <<'EOF'
status = error
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = %p %m%n
rootLogger.level = ERROR
rootLogger.appenderRef.err.ref = STDERR
EOF
}

format_storage() {
    [[ -f "$DATA/meta.properties" ]] && return 0
    local id
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
    say "formatting KRaft storage in $DATA (cluster id $id)"
    "$(java_bin)" -Xmx256m -Dlog4j2.configurationFile="$CACHE/probe/log4j2.properties" \
        -cp "$LIBS/*" kafka.tools.StorageTool format -t "$id" -c "$CONFIG" >>"$LOG" 2>&1 \
        || { tail -n 30 "$LOG" >&2; die "kafka-storage format failed"; }
}

# The pid of our broker, if it is running: the pidfile's, or (pidfile lost, e.g.
# `make clean` removed var/) the java process whose command line carries our
# -Dshopwatch.kafka.dir marker.
is_ours() {
    [[ -n "$1" && -r "/proc/$1/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "-Dshopwatch.kafka.dir=$DIR "
}

running_pid() {
    local pid=""
    [[ -f "$PIDFILE" ]] && pid=$(cat "$PIDFILE" 2>/dev/null || true)
    if is_ours "$pid"; then echo "$pid"; return 0; fi
    local d
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        if is_ours "$pid"; then
            mkdir -p "$DIR" && echo "$pid" >"$PIDFILE"
            echo "$pid"
            return 0
        fi
    done
    return 1
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_ready() {
    local pid=$1 deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 40 "$LOG" >&2
            die "the broker exited during startup (log: $LOG)"
        fi
        if port_open "$PORT"; then
            local out
            if out=$(probe "$BOOTSTRAP" 20000); then
                say "ready on $BOOTSTRAP: $out (pid $pid, log $LOG)"
                return 0
            fi
        fi
        sleep 1
    done
    tail -n 40 "$LOG" >&2
    say "last probe error:"; tail -n 20 "$CACHE/probe/last.err" >&2 || true
    die "the broker on $BOOTSTRAP was not usable after ${START_TIMEOUT}s (log: $LOG)"
}

cmd_up() {
    if [[ -n "${KAFKA_BOOTSTRAP:-}" ]]; then
        say "KAFKA_BOOTSTRAP=$KAFKA_BOOTSTRAP: using that cluster, starting nothing"
        return 0
    fi
    mkdir -p "$DIR"
    exec 9>"$DIR/.lock"
    flock -w 600 9 || die "another kafka.sh holds $DIR/.lock"
    fetch
    local pid
    if pid=$(running_pid); then
        say "already running (pid $pid)"
        wait_ready "$pid"
        return 0
    fi
    if port_open "$PORT"; then
        # Not ours. A usable Kafka (another checkout's broker, say) will do.
        probe_class
        local out
        if out=$(probe "$BOOTSTRAP" 15000); then
            say "a broker not started from $DIR already answers on $BOOTSTRAP ($out); using it"
            return 0
        fi
        die "port $PORT is taken by something that is not a usable Kafka broker (set KAFKA_PORT)"
    fi
    port_open "$CONTROLLER_PORT" && die "controller port $CONTROLLER_PORT is taken (set KAFKA_CONTROLLER_PORT)"
    write_config
    [[ -f "$LOG" ]] && mv -f "$LOG" "$LOG.1"
    format_storage
    say "starting Kafka $KAFKA_VERSION on $BOOTSTRAP (controller 127.0.0.1:$CONTROLLER_PORT, heap $HEAP, data $DATA)"
    # setsid: the broker outlives the shell, make and pytest that started it.
    setsid "$(java_bin)" "-Dshopwatch.kafka.dir=$DIR" \
        -Xms128m "-Xmx$HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
        -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$DIR/log4j2.properties" \
        -cp "$LIBS/*" kafka.Kafka "$CONFIG" </dev/null >>"$LOG" 2>&1 8>&- 9>&- &
    pid=$!
    echo "$pid" >"$PIDFILE"
    wait_ready "$pid"
}

cmd_down() {
    if [[ -n "${KAFKA_BOOTSTRAP:-}" ]]; then
        say "KAFKA_BOOTSTRAP=$KAFKA_BOOTSTRAP: not ours, nothing to stop"
        return 0
    fi
    local pid
    if ! pid=$(running_pid); then
        rm -f "$PIDFILE"
        say "not running"
        return 0
    fi
    say "stopping pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 600; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "still running after 60s, killing it"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$PIDFILE"
    say "stopped"
}

cmd_status() {
    if [[ -n "${KAFKA_BOOTSTRAP:-}" ]]; then
        echo "external cluster: KAFKA_BOOTSTRAP=$KAFKA_BOOTSTRAP"
        if [[ -f "$LIBS/.complete" ]]; then
            local out
            out=$(probe "$KAFKA_BOOTSTRAP" 10000) || { echo "not answering"; return 3; }
            echo "$out"
        fi
        return 0
    fi
    local pid
    if pid=$(running_pid); then
        local out
        if out=$(probe "$BOOTSTRAP" 10000); then
            echo "running: Kafka $KAFKA_VERSION, pid $pid, $BOOTSTRAP, $out, data $DATA, log $LOG"
            return 0
        fi
        echo "running (pid $pid) but not answering on $BOOTSTRAP yet; log $LOG"
        return 1
    fi
    echo "stopped (data $DATA)"
    return 3
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    restart) cmd_down; cmd_up ;;
    logs) exec tail -n "${2:-100}" -F "$LOG" ;;
    clean) cmd_down; rm -rf "$DATA" "$LOG" "$LOG.1"; say "removed $DATA" ;;
    *) echo "usage: $0 up|down|status|restart|logs [N]|clean" >&2; exit 2 ;;
esac
