"""Configuration: defaults < file < command line; bad values name file, section and key."""

from __future__ import annotations

import pytest

from restmq import keys
from restmq.config import RedisTarget, load_config, parse_redis_url
from restmq.errors import ConfigError


def test_defaults_mean_embedded_redis_on_port_8888():
    config = load_config()
    assert config.redis.embedded
    assert (config.server.port, config.server.listen) == (8888, "127.0.0.1")
    assert config.server.max_message_bytes == 10 * 1024 * 1024
    assert config.dispatch.history_size == 1000


def test_sample_config_file_loads():
    config = load_config("etc/restmq.conf")
    assert config.server.port == 8888 and config.redis.embedded


def test_command_line_overrides_file(tmp_path):
    path = tmp_path / "r.conf"
    path.write_text("[server]\nport = 9000\nlisten = 0.0.0.0\n[redis]\npool_size = 3\n")
    config = load_config(str(path), {("server", "port"): "9100"})
    assert config.server.port == 9100
    assert config.server.listen == "0.0.0.0"
    assert config.redis.pool_size == 3


@pytest.mark.parametrize("text,needle", [
    ("[server]\nport = eighty\n", "[server] port"),
    ("[server]\nport = 70000\n", "[server] port"),
    ("[redis]\npool_size = 0\n", "[redis] pool_size"),
    ("[redis]\nurl = http://x\n", "[redis] url"),
    ("[dispatch]\nsweep_interval = -1\n", "[dispatch] sweep_interval"),
    ("[server]\naccess_log = maybe\n", "[server] access_log"),
    ("[server]\nmystery = 1\n", "[server] mystery"),
    ("[acl]\nfile = /no/such/file\n", "[acl] file"),
    ("no section header\n", "r.conf"),
])
def test_bad_value_names_file_section_and_key(tmp_path, text, needle):
    path = tmp_path / "r.conf"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert needle in caught.value.message
    assert str(path) in caught.value.message or "r.conf" in caught.value.message


def test_missing_file_is_a_config_error():
    with pytest.raises(ConfigError):
        load_config("/no/such/restmq.conf")


def test_original_redis_flags_select_a_tcp_redis():
    config = load_config(None, {("redis", "host"): "db.example", ("redis", "port"): "6380",
                                ("redis", "db"): "2"})
    assert config.redis.target == RedisTarget("tcp", "db.example", 6380, "", 2, None)


@pytest.mark.parametrize("url,expected", [
    ("redis://localhost:6390/3", RedisTarget("tcp", "localhost", 6390, "", 3, None)),
    ("redis://:pw@h/0", RedisTarget("tcp", "h", 6379, "", 0, "pw")),
    ("unix:///tmp/r.sock?db=4", RedisTarget("unix", "", 0, "/tmp/r.sock", 4, None)),
    ("sentinel://a:26379,b:26380/mymaster", RedisTarget(
        "sentinel", "", 0, "", 0, None, (("a", 26379), ("b", 26380)), "mymaster")),
])
def test_redis_urls(url, expected):
    assert parse_redis_url(url) == expected


@pytest.mark.parametrize("url", ["redis://", "redis://h/x", "unix://", "sentinel://a/", "sentinel://a:1",
                                 "ftp://h", "redis://h:99999"])
def test_bad_redis_urls(url):
    with pytest.raises(ValueError):
        parse_redis_url(url)


def test_password_is_not_in_describe():
    assert "pw" not in parse_redis_url("redis://:pw@h:1/0").describe()


@pytest.mark.parametrize("name,valid", [
    ("jobs", True), ("syslogd:127.0.0.1", True), ("a-b_c.d@e", True), ("x" * 200, True),
    ("x" * 200 + ":dead", True), ("x" * 201, False), ("", False), ("a b", True), ("a/b", True),
    ("queuestat:x", False), ("ünï", True), ("a\n", False), ("a\x00", False), ("\x85", False),
    ("\udcff", False), ("ü" * 200, True), ("ü" * 201, False), ("a#b", False),
    ("q:dead@workers", True),
])
def test_queue_names(name, valid):
    assert keys.is_valid_queue_name(name) is valid


def test_message_keys_belong_to_their_queue():
    assert keys.queue_of_key("syslogd:10.0.0.1:42") == "syslogd:10.0.0.1"
    assert keys.queue_of_key("jobs:UUID") == ""
