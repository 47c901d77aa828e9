#!/usr/bin/env bash
# Apache Kafka (KRaft, single combined broker+controller) assembled from Maven Central jars.
#   infra/kafka.sh fetch|format|start|wait|stop|status
# State lives in $LPT_HOME/kafka (git-ignored). Ports: $LPT_KAFKA_PORT (client),
# $LPT_KAFKA_CONTROLLER_PORT (controller). The Kafka version is pinned in infra/kafka/pom.xml.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/ports.sh"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
LPT_HOME="${LPT_HOME:-$ROOT/.lpt}"
[[ "$LPT_HOME" == /* ]] || LPT_HOME="$PWD/$LPT_HOME" # Maven resolves relative paths elsewhere
PORT="${LPT_KAFKA_PORT:-19092}"
CPORT="${LPT_KAFKA_CONTROLLER_PORT:-19093}"
KDIR="$LPT_HOME/kafka"
LIBS="$KDIR/libs"
DATA="$KDIR/data"
CONF="$KDIR/server.properties"
PIDF="$KDIR/kafka.pid"
LOGF="$KDIR/kafka.out"
HEAP="${LPT_KAFKA_HEAP:-768m}"

java_cmd() {
  java -Xms256m -Xmx"$HEAP" -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KDIR/log4j2.properties" -Dkafka.logs.dir="$KDIR/logs" \
    -cp "$LIBS/*" "$@"
}

# The jars are fetched again when infra/kafka/pom.xml changes (its digest is kept beside them),
# but never under a running broker: it keeps the jars it started with until its next start.
fetch() {
  local want have=""
  want="$(sha256sum "$HERE/kafka/pom.xml" | cut -d' ' -f1)"
  [[ -f "$LIBS/.pom.sha256" ]] && have="$(cat "$LIBS/.pom.sha256")"
  if [[ "$have" == "$want" ]]; then return 0; fi
  if running; then
    echo "kafka: infra/kafka/pom.xml changed; the jars are fetched again at the next start"
    return 0
  fi
  rm -rf "$LIBS"
  mkdir -p "$LIBS"
  echo "kafka: fetching jars from Maven Central into $LIBS"
  mvn -q -B -Dstyle.color=never -f "$HERE/kafka/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$LIBS" -DincludeScope=runtime
  if ! compgen -G "$LIBS/kafka_2.13-*.jar" >/dev/null; then
    echo "kafka: Maven put no broker jar into $LIBS" >&2
    exit 1
  fi
  echo "$want" >"$LIBS/.pom.sha256"
}

write_config() {
  mkdir -p "$KDIR/logs"
  cat >"$CONF" <<CFG
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CPORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$DATA
num.partitions=6
offsets.topic.replication.factor=1
offsets.topic.num.partitions=12
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.hours=-1
log.segment.bytes=67108864
message.max.bytes=10485760
CFG
  cat >"$KDIR/log4j2.properties" <<'L4J'
status = warn
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.filePattern = ${sys:kafka.logs.dir}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = warn
logger.apache.name = org.apache.kafka
logger.apache.level = warn
# Start-up and shutdown (a broker that exits says why, and whether it was asked to).
logger.raftserver.name = kafka.server.KafkaRaftServer
logger.raftserver.level = info
logger.brokerserver.name = kafka.server.BrokerServer
logger.brokerserver.level = info
L4J
}

format() {
  fetch
  write_config
  if [[ -f "$DATA/meta.properties" ]]; then return 0; fi
  mkdir -p "$DATA"
  local id
  id="$(java_cmd kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)"
  echo "kafka: formatting storage (cluster id $id)"
  java_cmd kafka.tools.StorageTool format -t "$id" -c "$CONF" --ignore-formatted >/dev/null
}

running() { [[ -f "$PIDF" ]] && kill -0 "$(cat "$PIDF")" 2>/dev/null; }

start() {
  format
  if running; then echo "kafka: already running (pid $(cat "$PIDF"))"; return 0; fi
  echo "kafka: starting on 127.0.0.1:$PORT"
  warn_if_ephemeral "$PORT" kafka
  warn_if_ephemeral "$CPORT" "kafka controller"
  ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  rm -f "$KDIR"/logs/hs_err_pid*.log
  nohup bash -c "exec java -Xms256m -Xmx$HEAP -XX:+UseG1GC -Djava.awt.headless=true \
    -XX:ErrorFile='$KDIR/logs/hs_err_pid%p.log' \
    -Dlog4j2.configurationFile='$KDIR/log4j2.properties' -Dkafka.logs.dir='$KDIR/logs' \
    -cp '$LIBS/*' kafka.Kafka '$CONF'" >"$LOGF" 2>&1 </dev/null &
  echo $! >"$PIDF"
}

wait_ready() {
  local deadline=$((SECONDS + ${1:-120}))
  until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do
    if ! running; then
      echo "kafka: process exited; see $LOGF and $KDIR/logs/server.log" >&2
      tail -20 "$LOGF" >&2
      tail -20 "$KDIR/logs/server.log" >&2 2>/dev/null || true
      for crash in "$KDIR"/logs/hs_err_pid*.log; do [[ -f "$crash" ]] && head -30 "$crash" >&2; done
      exit 1
    fi
    if ((SECONDS > deadline)); then echo "kafka: not ready in time" >&2; exit 1; fi
    sleep 0.5
  done
  echo "kafka: ready on 127.0.0.1:$PORT"
}

stop() {
  if ! running; then rm -f "$PIDF"; echo "kafka: not running"; return 0; fi
  local pid; pid="$(cat "$PIDF")"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$PIDF"
  echo "kafka: stopped"
}

case "${1:-}" in
  fetch) fetch ;;
  format) format ;;
  start) start ;;
  wait) wait_ready "${2:-120}" ;;
  stop) stop ;;
  status) if running; then echo "kafka: running (pid $(cat "$PIDF"), 127.0.0.1:$PORT)"; else echo "kafka: stopped"; exit 3; fi ;;
  *) echo "usage: $0 fetch|format|start|wait|stop|status" >&2; exit 2 ;;
esac
