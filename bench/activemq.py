"""Apache ActiveMQ beside RestMQ's long-poll (figure v): a consumer already waiting.

Issue 18 compares RestMQ's waiting long-poll consumer with ActiveMQ 5.17's REST
API. Debian's ``activemq`` package (5.17.2) ships the broker without its web
module (no activemq-web, no MessageServlet, no Jetty: ``lib/web`` is absent), and
nothing else this machine can install provides it, so the REST API cannot run
here. What runs is ActiveMQ's best case: its own STOMP transport, a consumer
already subscribed to the queue, one message published at a time. The REST
servlet consumes through the same broker and adds HTTP on top, so this is a
lower bound for ActiveMQ's REST latency.

v  publish -> long-poll latency, consumer waiting, same process (as r);
   vs ActiveMQ STOMP publish -> subscribed consumer

The STOMP client is a raw socket here, as lean as bench.loads.longpoll_latency's
HTTP one (stomp.py's receiver thread measured about twice as slow on this bench).
"""

from __future__ import annotations

import os
import re
import select
import shutil
import socket
import subprocess
import time
from typing import Any, Dict, List, Optional, Tuple

from bench.loads import longpoll_latency
from bench.procs import BenchError, Proc, Procs, free_port, percentile, wait_port

__all__ = ["ACTIVEMQ_FIGURES", "phase_activemq", "start_activemq", "stomp_latency", "activemq_versions"]

ACTIVEMQ_FIGURES: Dict[str, tuple] = {
    "v-p50": ("v. publish->long-poll latency p50, same process (as r); vs ActiveMQ 5.17 STOMP, "
              "consumer subscribed", "ms"),
    "v-p99": ("v. publish->long-poll latency p99, same run; vs ActiveMQ 5.17 STOMP", "ms"),
}

# Debian's layout (package activemq): the run jar puts lib/ and lib/optional on the class path
ACTIVEMQ_HOME = "/usr/share/activemq"
ACTIVEMQ_JAR = os.path.join(ACTIVEMQ_HOME, "bin", "activemq.jar")
STOMP_JAR = os.path.join(ACTIVEMQ_HOME, "lib", "activemq-stomp.jar")
# a fixed heap, as Debian's /etc/default/activemq sets it; IPv4 sockets, so that
# bench.procs.wait_port finds the listener in /proc/net/tcp
JVM_FLAGS = ["-Xms512m", "-Xmx512m", "-Djava.net.preferIPv4Stack=true"]
# unmeasured rounds before the timed ones, so the JIT has compiled the hot path
JIT_WARM = 2000
# the issue's figure for ActiveMQ's REST API (not run here), ms
ISSUE_REST = {"p50": 0.36, "p99": 0.80}

# Only the STOMP transport (TCP_NODELAY on, its documented option: its best case),
# no persistence, no JMX, no advisory topics, no scheduler.
ACTIVEMQ_XML = """<beans xmlns="http://www.springframework.org/schema/beans"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="http://www.springframework.org/schema/beans
    http://www.springframework.org/schema/beans/spring-beans.xsd
    http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="bench" useJmx="false"
          persistent="false" advisorySupport="false" schedulerSupport="false"
          dataDirectory="%(data)s">
    <managementContext><managementContext createConnector="false"/></managementContext>
    <transportConnectors>
      <transportConnector name="stomp" uri="stomp://127.0.0.1:%(port)d?transport.tcpNoDelay=true"/>
    </transportConnectors>
  </broker>
</beans>
"""


def _output(argv: List[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (done.stdout + done.stderr).strip()


def activemq_versions() -> List[str]:
    """``["activemq 5.17.2+dfsg-2+deb12u1", "OpenJDK 17.0.15"]`` where installed."""
    if not os.path.exists(ACTIVEMQ_JAR):
        return []
    parts = []
    version = _output(["dpkg-query", "-W", "-f", "${Version}", "activemq"])
    if version and "no packages" not in version:
        parts.append("activemq %s" % version)
    java = shutil.which("java")
    if java:
        found = re.search(r'version "([^"]+)"', _output([java, "-version"]))
        if found:
            parts.append("OpenJDK %s" % found.group(1))
    return parts


def start_activemq(procs: Procs, port: int) -> Proc:
    """Debian's ActiveMQ broker with only a STOMP connector on ``port``, its own folder
    under the bench's work folder, in its own process group, on the CPU of the server
    measured (all its threads: the JIT and the collector too), as RestMQ and the other
    baselines are."""
    if not os.path.exists(ACTIVEMQ_JAR):
        raise BenchError("activemq not installed (Debian activemq; make bench installs it)")
    if not os.path.exists(STOMP_JAR):
        raise BenchError("Debian's activemq has no STOMP transport (%s)" % STOMP_JAR)
    java = shutil.which("java")
    if java is None:
        raise BenchError("no java (Debian default-jre-headless comes with activemq)")
    base = procs.path("activemq")
    conf, data = os.path.join(base, "conf"), os.path.join(base, "data")
    for folder in (conf, data, os.path.join(base, "tmp")):
        os.makedirs(folder, exist_ok=True)
    xml = os.path.join(conf, "activemq.xml")
    with open(xml, "w") as f:
        f.write(ACTIVEMQ_XML % {"data": data, "port": port})
    proc = procs.start(Proc("activemq", [
        java, *JVM_FLAGS,
        "-Djava.io.tmpdir=" + os.path.join(base, "tmp"),
        "-Dactivemq.home=" + ACTIVEMQ_HOME, "-Dactivemq.base=" + base,
        "-Dactivemq.conf=" + conf, "-Dactivemq.data=" + data,
        "-jar", ACTIVEMQ_JAR, "start", "xbean:file:" + xml], os.path.join(base, "activemq.log"),
        cpus=procs.pinning.server))
    wait_port(port, proc, timeout=90.0)
    return proc


class Stomp:
    """One STOMP 1.2 connection on a raw socket: frames out, whole frames in."""

    def __init__(self, port: int, timeout: float = 15.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        self.sock.sendall(b"CONNECT\naccept-version:1.2\nhost:localhost\nheart-beat:0,0\n\n\x00")
        head, body = self.frame(timeout)
        if not head.startswith(b"CONNECTED"):
            raise BenchError("STOMP CONNECT answered %r" % (head + body)[:200])

    def frame(self, timeout: float) -> Tuple[bytes, bytes]:
        """The next whole frame: (command and headers, body)."""
        deadline = time.monotonic() + timeout
        while True:
            self.buffer = self.buffer.lstrip(b"\r\n")  # heart-beats
            end = self.buffer.find(b"\n\n")
            if end >= 0:
                head = self.buffer[:end]
                length = re.search(rb"\ncontent-length:(\d+)", head)
                if length is None:
                    stop = self.buffer.find(b"\x00", end + 2)
                else:
                    stop = end + 2 + int(length.group(1))
                    if len(self.buffer) <= stop:
                        stop = -1
                if stop >= 0:
                    body = self.buffer[end + 2:stop]
                    self.buffer = self.buffer[stop + 1:]
                    if head.startswith(b"ERROR"):
                        raise BenchError("STOMP ERROR: %r" % (head + b" " + body)[:300])
                    return head, body
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                raise BenchError("no STOMP frame within %.0f s" % timeout)
            data = self.sock.recv(65536)
            if not data:
                raise BenchError("ActiveMQ closed the STOMP connection")
            self.buffer += data

    def close(self) -> None:
        try:
            self.sock.sendall(b"DISCONNECT\n\n\x00")
        except OSError:
            pass
        self.sock.close()


def stomp_latency(port: int, queue: str, samples: int, warm: int = 20, settle: float = 0.003,
                  deadline: float = 120.0) -> Dict[str, Any]:
    """Publish -> consume latency for a STOMP consumer already subscribed to ``queue``.

    As bench.loads.longpoll_latency times row r: each round gives the broker
    ``settle`` seconds with the consumer waiting, then times from just before the
    SEND frame is written (on the publisher's connection) to the moment the
    consumer's whole MESSAGE frame is in; the publisher's RECEIPT (the broker took
    the message, as RestMQ's POST answer) is read after that, untimed. Its body
    must be the published message, else the round counts as a miss.
    """
    consumer, publisher = Stomp(port), Stomp(port)
    latencies: List[float] = []
    misses = 0
    stop_at = time.monotonic() + deadline
    try:
        consumer.sock.sendall(b"SUBSCRIBE\nid:0\ndestination:%s\nack:auto\nreceipt:subscribed\n\n\x00"
                              % queue.encode())
        head, _ = consumer.frame(15.0)
        if not head.startswith(b"RECEIPT"):
            raise BenchError("STOMP SUBSCRIBE answered %r" % head[:200])
        send = b"SEND\ndestination:%s\ncontent-type:text/plain\n" % queue.encode()
        for i in range(warm + samples):
            if time.monotonic() > stop_at:
                break
            time.sleep(settle)
            body = b"m%d" % i
            frame = send + b"receipt:%d\ncontent-length:%d\n\n%s\x00" % (i, len(body), body)
            started = time.monotonic()
            publisher.sock.sendall(frame)
            head, got = consumer.frame(15.0)
            took = time.monotonic() - started
            receipt, _ = publisher.frame(15.0)
            if not receipt.startswith(b"RECEIPT"):
                raise BenchError("STOMP SEND answered %r" % receipt[:200])
            if not head.startswith(b"MESSAGE") or got != body:
                misses += 1
                continue
            if i >= warm:
                latencies.append(took)
    finally:
        consumer.close()
        publisher.close()
    latencies.sort()
    return {"samples": len(latencies), "misses": misses, "latencies": latencies}


def phase_activemq(bench: Any) -> List[Any]:
    """Figure v: RestMQ's waiting long-poll consumer (as r) beside ActiveMQ's subscribed
    STOMP consumer, the two interleaved in ``plan.runs`` rounds in this process."""
    plan = bench.plan
    _, restmq = bench._broker(profile="activemq")
    amq_error: Optional[str] = None
    port = 0
    try:
        port = free_port()
        start_activemq(bench.procs, port)
        warmed = stomp_latency(port, "/queue/warm", JIT_WARM, warm=0, deadline=300.0)
        if warmed["samples"] < JIT_WARM:
            raise BenchError("the JIT warm-up got %d of %d messages" % (warmed["samples"], JIT_WARM))
    except BenchError as exc:
        amq_error = str(exc)
    found: Dict[str, Dict[str, Any]] = {name: {"latencies": [], "misses": 0} for name in ("restmq", "amq")}
    share = max(1, plan.longpoll_samples // max(1, plan.runs))
    for _ in range(max(1, plan.runs)):
        result = longpoll_latency(restmq, "/q/lv?wait=10", restmq, "/q/lv", share, warm=20)
        found["restmq"]["latencies"] += result["latencies"]
        found["restmq"]["misses"] += result["misses"]
        if amq_error is None:
            result = stomp_latency(port, "/queue/lv", share, warm=20)
            found["amq"]["latencies"] += result["latencies"]
            found["amq"]["misses"] += result["misses"]
    for entry in found.values():
        entry["latencies"].sort()
    same, amq = found["restmq"]["latencies"], found["amq"]["latencies"]
    if not same:
        raise BenchError("no long-poll delivery was timed")
    if amq_error is None and not amq:
        amq_error = "no ActiveMQ delivery was timed"
    rows = []
    for stat, fraction in (("p50", 0.50), ("p99", 0.99)):
        row = bench._row("v-%s" % stat, restmq=percentile(same, fraction) * 1000)
        notes = []
        if amq_error is not None:
            notes.append("baseline n/a: %s" % amq_error)
        else:
            row.baseline = percentile(amq, fraction) * 1000
            notes.append("%d samples vs %d" % (len(same), len(amq)))
            notes.append("ActiveMQ: STOMP, raw socket client, SEND with receipt (read untimed), "
                         "ack:auto, tcpNoDelay, non-persistent, no JMX, %s, %d unmeasured JIT "
                         "warm-up rounds; a lower bound for its REST API (not in Debian)"
                         % (" ".join(JVM_FLAGS), JIT_WARM))
        notes.append("issue 18's ActiveMQ REST figure (not run here): %.2f ms" % ISSUE_REST[stat])
        for name, label in (("restmq", "RestMQ"), ("amq", "ActiveMQ")):
            if found[name]["misses"]:
                notes.append("%s: %d rounds got another message" % (label, found[name]["misses"]))
        row.note = "; ".join(notes)
        rows.append(row)
    bench.log("  waiting consumer p50/p99 ms: RestMQ long-poll %.3f/%.3f, ActiveMQ STOMP %s" % (
        percentile(same, 0.5) * 1000, percentile(same, 0.99) * 1000,
        amq_error or "%.3f/%.3f" % (percentile(amq, 0.5) * 1000, percentile(amq, 0.99) * 1000)))
    return rows
