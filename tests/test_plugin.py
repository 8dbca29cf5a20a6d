"""The twistd plugin: found, parses the original's flags, builds the named services."""

from __future__ import annotations

import pytest
from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.python import usage

from restmq import tap


def test_plugin_is_found():
    makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
    assert "restmq" in makers
    assert makers["restmq"].options is tap.Options


def test_options_parse_a_sample_command_line():
    options = tap.Options()
    options.parseOptions(["--port", "9999", "--listen", "0.0.0.0", "--redis-host", "127.0.0.1",
                          "--redis-port", "6399", "--redis-pool", "3", "--redis-db", "1"])
    config = options.config
    assert config.server.port == 9999 and config.server.listen == "0.0.0.0"
    assert config.redis.target.port == 6399 and config.redis.target.db == 1
    assert config.redis.pool_size == 3


@pytest.mark.parametrize("argv", [["--port", "x"], ["--redis", "nope://"], ["--acl", "/missing"],
                                  ["--redis-pool", "-1"], ["--bogus"]])
def test_bad_option_is_a_usage_error(argv):
    with pytest.raises(usage.UsageError):
        tap.Options().parseOptions(argv)


def test_make_service_builds_named_services_without_listening(tmp_path):
    options = tap.Options()
    options.parseOptions(["--data-dir", str(tmp_path / "data"), "--port", "0"])
    service = tap.makeService(options)
    assert [child.name for child in service] == ["redis", "pool", "dispatcher", "http", "banner"]
    assert not any(child.running for child in service)


def test_make_service_with_external_redis_has_no_embedded_child():
    options = tap.Options()
    options.parseOptions(["--redis", "redis://127.0.0.1:6399/0", "--port", "0"])
    assert [child.name for child in tap.makeService(options)] == ["pool", "dispatcher", "http", "banner"]
