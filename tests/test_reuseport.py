"""--reuse-port: several listeners (and several RestMQ processes) on one port."""

from __future__ import annotations

import socket

import pytest
import pytest_twisted
from twisted.internet import protocol
from twisted.internet.error import CannotListenError

from restmq.server.reuseport import ReusePortServer
from tests.helpers import free_port, raw_exchange
from tests.processes import Process, twistd_command


class _Hello(protocol.Protocol):
    def connectionMade(self) -> None:
        self.transport.write(self.factory.greeting)
        self.transport.loseConnection()


def _hello_factory(greeting: bytes) -> protocol.Factory:
    factory = protocol.Factory.forProtocol(_Hello)
    factory.greeting = greeting
    return factory


@pytest_twisted.ensureDeferred
async def test_two_servers_listen_on_one_port_and_either_serves():
    port = free_port()
    first = ReusePortServer(port, _hello_factory(b"first"), "127.0.0.1")
    second = ReusePortServer(port, _hello_factory(b"second"), "127.0.0.1")
    first.privilegedStartService()
    first.startService()
    try:
        second.privilegedStartService()
        second.startService()
        assert first.getHost().port == second.getHost().port == port
        assert await raw_exchange(port, b"") in (b"first", b"second")
        # with the first one gone, the kernel hands every connection to the second
        await first.stopService()
        for _ in range(5):
            assert await raw_exchange(port, b"") == b"second"
    finally:
        if first.running:
            await first.stopService()
        if second.running:
            await second.stopService()


def test_port_held_without_reuse_port_cannot_be_shared():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        server = ReusePortServer(port, _hello_factory(b"x"), "127.0.0.1")
        with pytest.raises(CannotListenError):
            server.privilegedStartService()
        assert not server.running


def test_bad_interface_cannot_listen():
    server = ReusePortServer(free_port(), _hello_factory(b"x"), "203.0.113.7")
    with pytest.raises(CannotListenError):
        server.privilegedStartService()


def test_twistd_reuse_port_on_a_busy_port_is_one_clear_line_and_exit_1(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        broker = Process(twistd_command("--port", str(port), "--reuse-port",
                                        "--data-dir", str(tmp_path / "d")),
                         str(tmp_path / "log")).start()
        try:
            broker.proc.wait(timeout=30)
        finally:
            broker.kill()
    assert broker.proc.returncode == 1
    assert "restmq: cannot listen on 127.0.0.1:%d" % port in broker.log()
    assert "Traceback" not in broker.log()


def test_make_service_with_reuse_port_builds_a_reuse_port_server(tmp_path):
    from restmq import tap
    options = tap.Options()
    options.parseOptions(["--redis", "redis://127.0.0.1:6399/0", "--port", "0", "--reuse-port"])
    http = tap.makeService(options).getServiceNamed("http")
    assert isinstance(http, ReusePortServer) and not http.running


def test_reuse_port_from_the_config_file(tmp_path):
    from restmq.config import load_config
    conf = tmp_path / "r.conf"
    conf.write_text("[server]\nreuse_port = true\n")
    assert load_config(str(conf)).server.reuse_port
