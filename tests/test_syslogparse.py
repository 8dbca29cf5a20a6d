"""Syslog framing and parsing without a reactor: RFC 6587 frames, RFC 3164 and 5424 fields."""

from __future__ import annotations

import pytest

from restmq.ingest.syslog import sender_queue
from restmq.ingest.syslogparse import FIELDS, Framer, parse_line


def feed_all(framer: Framer, *chunks: bytes):
    frames = []
    for chunk in chunks:
        frames += framer.feed(chunk)
    return frames


# framing

def test_newline_frames_split_anywhere():
    framer = Framer(1024)
    data = b"<13>one\n<13>two\r\n<13>three\n"
    frames = feed_all(framer, *[data[i:i + 1] for i in range(len(data))])
    assert frames == [(b"<13>one", False), (b"<13>two", False), (b"<13>three", False)]


def test_octet_counted_frames_may_hold_newlines_and_split_anywhere():
    framer = Framer(1024)
    data = b"11 <13>a\nb\nc d9 <13>hello"
    frames = feed_all(framer, *[data[i:i + 2] for i in range(0, len(data), 2)])
    assert frames == [(b"<13>a\nb\nc d", False), (b"<13>hello", False)]


def test_framing_is_recognised_per_frame():
    framer = Framer(1024)
    assert framer.feed(b"4 <1>x<13>line\n6 <2>abc") == [
        (b"<1>x", False), (b"<13>line", False), (b"<2>abc", False)]


def test_a_line_starting_with_digits_is_not_taken_for_a_length():
    framer = Framer(1024)
    assert framer.feed(b"42 is the answer\n") == [(b"42 is the answer", False)]
    assert framer.feed(b"12") == []
    assert framer.feed(b"34\n") == [(b"1234", False)]


def test_empty_lines_are_skipped():
    assert Framer(64).feed(b"\n\r\n\x00\n<13>x\n") == [(b"<13>x", False)]


def test_an_oversized_line_is_cut_and_its_rest_skipped():
    framer = Framer(16)
    frames = feed_all(framer, b"<13>" + b"a" * 20, b"b" * 100, b"c\n<13>next\n")
    assert frames == [(b"<13>" + b"a" * 12, True), (b"<13>next", False)]
    assert len(framer._buffer) == 0


def test_a_line_of_exactly_max_line_is_whole():
    assert Framer(8).feed(b"<13>abcd\n") == [(b"<13>abcd", False)]


def test_an_oversized_octet_frame_is_cut_and_its_rest_skipped():
    framer = Framer(16)
    frames = feed_all(framer, b"40 <13>" + b"a" * 20, b"b" * 16, b"4 <1>x")
    assert frames == [(b"<13>" + b"a" * 12, True), (b"<1>x", False)]


def test_memory_per_connection_is_bounded_by_max_line():
    framer = Framer(1000)
    for _ in range(200):
        framer.feed(b"x" * 4096)
        assert len(framer._buffer) <= 1000 + 4096
    framer = Framer(1000)
    framer.feed(b"999999999 <13>")
    for _ in range(200):
        framer.feed(b"y" * 4096)
        assert len(framer._buffer) <= 1000 + 4096


def test_finish_keeps_a_last_line_without_newline_and_flags_a_cut_frame():
    framer = Framer(64)
    framer.feed(b"<13>last words")
    assert framer.finish() == [(b"<13>last words", False)]
    framer = Framer(64)
    framer.feed(b"30 <13>short")
    assert framer.finish() == [(b"<13>short", True)]
    assert Framer(64).finish() == []


# parsing

def test_rfc5424_with_structured_data():
    fields = parse_line(b'<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 '
                        b'[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"]'
                        b'[examplePriority@32473 class="high"] \xef\xbb\xbfAn application event')
    assert fields == {
        "format": "rfc5424", "pri": 165, "facility": "local4", "severity": "notice",
        "timestamp": "2003-10-11T22:14:15.003Z", "hostname": "mymachine.example.com",
        "app": "evntslog", "procid": None, "msgid": "ID47",
        "structured_data": {"exampleSDID@32473": {"iut": "3", "eventSource": "Application",
                                                  "eventID": "1011"},
                            "examplePriority@32473": {"class": "high"}},
        "message": "An application event", "malformed": False}


def test_rfc5424_param_escapes_and_repeats():
    fields = parse_line(b'<13>1 - - - - - [a@1 q="say \\"hi\\" \\\\ \\]" q="2" r="\\n"] m')
    assert fields["structured_data"] == {"a@1": {"q": ['say "hi" \\ ]', "2"], "r": "\\n"}}
    assert fields["message"] == "m"


def test_rfc5424_nil_values_and_no_message():
    fields = parse_line(b"<0>1 - - - - - -")
    assert (fields["facility"], fields["severity"], fields["timestamp"], fields["message"]) == (
        "kern", "emerg", None, "")
    assert not fields["malformed"]


def test_rfc3164_the_originals_example():
    fields = parse_line(b"<22>Nov  1 00:12:04 gleicon-vm1 postfix/smtpd[4880]: "
                        b"connect from localhost[127.0.0.1]")
    assert {key: fields[key] for key in ("format", "facility", "severity", "timestamp", "hostname",
                                         "app", "procid", "message")} == {
        "format": "rfc3164", "facility": "mail", "severity": "info", "timestamp": "Nov  1 00:12:04",
        "hostname": "gleicon-vm1", "app": "postfix/smtpd", "procid": "4880",
        "message": "connect from localhost[127.0.0.1]"}


@pytest.mark.parametrize("line,hostname,app,message", [
    (b"<13>Nov 27 13:35:57 myapp: no host", None, "myapp", "no host"),
    (b"<13>Nov 27 13:35:57 vm free text, no tag", "vm", None, "free text, no tag"),
    (b"<13>Nov 27 13:35:57 vm http://x is down", "vm", None, "http://x is down"),
    (b"<13>2026-01-02T03:04:05.123+01:00 vm app[7]: iso time", "vm", "app", "iso time"),
    (b"<13>tag: no timestamp at all", None, "tag", "no timestamp at all"),
    (b"<13>just text", None, None, "just text"),
])
def test_rfc3164_reads_whatever_header_is_there(line, hostname, app, message):
    fields = parse_line(line)
    assert (fields["hostname"], fields["app"], fields["message"]) == (hostname, app, message)
    assert fields["format"] == "rfc3164" and not fields["malformed"]


@pytest.mark.parametrize("line,error", [
    (b"no priority at all", "no <PRI>"),
    (b"", "no <PRI>"),
    (b"<>1 - - - - - -", "no <PRI>"),
    (b"<192>x", "over 191"),
    (b"<13>1 2003-10-11T22:14:15Z host", "incomplete RFC 5424 header"),
    (b'<13>1 - - - - - [id a="1"', "structured data"),
    (b'<13>1 - - - - - [id a=1] m', "structured data"),
    (b'<13>1 - - - - - [id a="1"]m', "structured data"),
    (b"<13>1 - - - - - x", "structured data"),
    (b"<13>1 - - - - - -x", "after the structured data"),
])
def test_malformed_lines_keep_their_raw_text(line, error):
    fields = parse_line(line)
    assert fields["malformed"] is True
    assert error in fields["error"]
    assert fields["message"] == line.decode()
    assert set(FIELDS) <= set(fields)


def test_bytes_that_are_not_utf8_are_escaped_not_lost():
    fields = parse_line(b"<13>app: caf\xe9 \xff")
    assert fields["message"] == "caf\\xe9 \\xff"


@pytest.mark.parametrize("address,queue", [
    ("127.0.0.1", "syslogd:127.0.0.1"),
    ("::ffff:10.1.2.3", "syslogd:10.1.2.3"),
    ("::1", "syslogd:::1"),
    ("fe80::1%eth0", "syslogd:fe80::1_eth0"),
])
def test_sender_queue_names(address, queue):
    assert sender_queue(address) == queue
