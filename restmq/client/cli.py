"""restmq-cli: put, get, tail, stats, purge, policy, pause and resume from a shell.

Built on :mod:`restmq.client`. ``python -m restmq.client.cli`` runs it too. Exit status:
0 done, 1 ``get`` found nothing, 2 bad usage, 3 the broker refused or could not
be reached (the reason goes to standard error).
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import sys
import time
from typing import IO, Any, Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

import orjson

from restmq.client import DEFAULT_URL, Broker, ClientError, Queue

__all__ = ["main", "Progress"]

EXIT_OK, EXIT_EMPTY, EXIT_USAGE, EXIT_FAILED = 0, 1, 2, 3


class Progress:
    """A plain progress line on a stream (standard error): redrawn in place on a
    terminal, one line a second at most elsewhere, and a summary at the end.

    :param total: bytes to go through, when known (a file), for a percentage and a bar.
    """

    WIDTH = 30

    def __init__(self, stream: IO[str], total: Optional[int] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.total = total
        self.clock = clock
        self.started = clock()
        self.count = 0
        self.done = 0
        self._shown = self.started
        self._tty = stream.isatty()

    def advance(self, messages: int, consumed: int) -> None:
        """``messages`` more were sent, ``consumed`` more bytes of input read."""
        self.count += messages
        self.done += consumed
        now = self.clock()
        if self._tty or now - self._shown >= 1.0:
            self._shown = now
            self._draw(now, "\r" if self._tty else "\n")

    def finish(self, queue: str) -> None:
        seconds = max(self.clock() - self.started, 1e-9)
        if self._tty:
            self.stream.write("\r\x1b[K")
        self.stream.write("put %d messages to %s in %.1f s (%.0f/s)\n"
                          % (self.count, queue, seconds, self.count / seconds))
        self.stream.flush()

    def _draw(self, now: float, end: str) -> None:
        rate = self.count / max(now - self.started, 1e-9)
        line = "put %d messages  %.0f/s" % (self.count, rate)
        if self.total:
            fraction = min(1.0, self.done / self.total)
            filled = int(fraction * self.WIDTH)
            line = "[%s%s] %3.0f%%  %s" % ("#" * filled, "." * (self.WIDTH - filled), 100 * fraction, line)
        if end == "\r":
            self.stream.write("\r" + line + "\x1b[K")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _lines(source: IO[bytes]) -> Iterator[Tuple[str, int]]:
    """(line without its end, bytes read) for every line of ``source``."""
    for raw in source:
        yield raw.decode("utf-8").rstrip("\r\n"), len(raw)


def _batches(items: Iterable[Tuple[str, int]], size: int) -> Iterator[Tuple[List[str], int]]:
    """Groups of ``size`` non-empty lines, with the bytes read for each group."""
    batch: List[str] = []
    consumed = 0
    for text, length in items:
        consumed += length
        if text:
            batch.append(text)
        if len(batch) >= size:
            yield batch, consumed
            batch, consumed = [], 0
    if batch or consumed:
        yield batch, consumed


def _put(queue: Queue, args: argparse.Namespace, stdin: IO[bytes], stderr: IO[str], out: IO[str]) -> int:
    if args.messages:
        keys = queue.put(*args.messages, ttl=args.ttl, delay=args.delay)
        for key in [keys] if isinstance(keys, str) else keys:
            out.write(key + "\n")
        return EXIT_OK
    if args.file in (None, "-"):
        source, total = stdin, None
    else:
        source = open(args.file, "rb")
        total = os.fstat(source.fileno()).st_size or None
    progress = Progress(stderr, total) if not args.quiet else None
    try:
        for batch, consumed in _batches(_lines(source), args.batch):
            if batch:
                queue.put(*batch, ttl=args.ttl, delay=args.delay)
            if progress is not None:
                progress.advance(len(batch), consumed)
    finally:
        if source is not stdin:
            source.close()
    if progress is not None:
        progress.finish(queue.name)
    return EXIT_OK


def _get(queue: Queue, args: argparse.Namespace, out: IO[str]) -> int:
    message = queue.get_message(block=args.wait > 0, timeout=args.wait)
    if message is None:
        return EXIT_EMPTY
    if args.json:
        out.write(orjson.dumps({"key": message.key, "value": message.value}).decode() + "\n")
    else:
        out.write(message.value + "\n")
    return EXIT_OK


def _tail(queue: Queue, args: argparse.Namespace, out: IO[str]) -> int:
    def show(key: str, value: str) -> None:
        out.write((orjson.dumps({"key": key, "value": value}).decode() if args.json else value) + "\n")
        out.flush()

    if not args.follow:
        for message in reversed(queue.last(args.lines)):
            show(message.key, message.value)
        return EXIT_OK
    for message in queue.consume_messages():
        show(message.key, message.value)
    return EXIT_OK


_COLUMNS = ("len", "inflight", "delayed", "dead", "status", "policy", "oldest_age")


def _stats(broker: Broker, queue: Optional[Queue], args: argparse.Namespace, out: IO[str]) -> int:
    if queue is not None:
        payload: Any = queue.stats()
        if args.json:
            out.write(orjson.dumps(payload).decode() + "\n")
        else:
            for name in _COLUMNS + ("subscribers", "redis"):
                out.write("%-12s %s\n" % (name, payload.get(name)))
        return EXIT_OK
    payload = broker.stats()
    if args.json:
        out.write(orjson.dumps(payload).decode() + "\n")
        return EXIT_OK
    rows: List[Tuple[str, ...]] = [("queue",) + _COLUMNS]
    for name, entry in sorted(payload["queues"].items()):
        rows.append((name,) + tuple("-" if entry.get(c) is None else str(entry.get(c)) for c in _COLUMNS))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() + "\n")
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="restmq-cli", description="Talk to a RestMQ broker.",
        epilog="Exit status: 0 done, 1 get found nothing, 2 bad usage, 3 the broker refused or "
               "could not be reached.")
    parser.add_argument("--url", default=os.environ.get("RESTMQ_URL", DEFAULT_URL),
                        help="the broker (env RESTMQ_URL; default %(default)s)")
    parser.add_argument("--token", default=os.environ.get("RESTMQ_TOKEN"),
                        help="Bearer token of an ACL (env RESTMQ_TOKEN)")
    parser.add_argument("--user", help="USER:PASSWORD for HTTP Basic")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the broker")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    put = commands.add_parser("put", help="add messages: arguments, or one per line of a file or stdin")
    put.add_argument("queue")
    put.add_argument("messages", nargs="*", help="messages (none: read lines from --file or stdin)")
    put.add_argument("-f", "--file", help="one message per line (- for stdin)")
    put.add_argument("--batch", type=int, default=500, help="messages per request (1-1000)")
    put.add_argument("--ttl", type=int, help="seconds each message lives")
    put.add_argument("--delay", type=float, help="seconds before messages can be taken")
    put.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")

    get = commands.add_parser("get", help="take the oldest message")
    get.add_argument("queue")
    get.add_argument("-w", "--wait", type=float, default=0.0, help="long-poll up to this many seconds")
    get.add_argument("--json", action="store_true", help="print {key, value}")

    tail = commands.add_parser("tail", help="the newest waiting messages; -f streams new ones")
    tail.add_argument("queue")
    tail.add_argument("-n", "--lines", type=int, default=10, help="how many (without -f)")
    tail.add_argument("-f", "--follow", action="store_true",
                      help="stream messages as they come (a streaming consumer: it takes them)")
    tail.add_argument("--json", action="store_true", help="print {key, value}")

    stats = commands.add_parser("stats", help="counts of one queue, or a table of all")
    stats.add_argument("queue", nargs="?")
    stats.add_argument("--json", action="store_true")

    for name, text in (("purge", "remove every message"), ("pause", "stop delivering to consumers"),
                       ("resume", "deliver again")):
        commands.add_parser(name, help=text).add_argument("queue")

    policy = commands.add_parser("policy", help="show or set the distribution policy")
    policy.add_argument("queue")
    policy.add_argument("value", nargs="?", choices=("broadcast", "roundrobin"))
    return parser


def main(argv: Optional[Sequence[str]] = None, stdin: Optional[IO[bytes]] = None,
         stdout: Optional[IO[str]] = None, stderr: Optional[IO[str]] = None) -> int:
    """Run one command; returns the exit status."""
    args = _parser().parse_args(argv)
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    auth = None
    if args.user:
        user, _, password = args.user.partition(":")
        auth = (user, password)
    if args.command == "put" and not 1 <= args.batch <= 1000:
        err.write("restmq-cli: --batch must be 1 to 1000\n")
        return EXIT_USAGE
    try:
        queue = None
        if getattr(args, "queue", None):
            queue = Queue(args.queue, args.url, auth=auth, token=args.token, timeout=args.timeout)
        if args.command == "stats":
            return _stats(Broker(args.url, auth, args.token, args.timeout), queue, args, out)
        assert queue is not None  # every other command names a queue
        if args.command == "put":
            return _put(queue, args, stdin or sys.stdin.buffer, err, out)
        if args.command == "get":
            return _get(queue, args, out)
        if args.command == "tail":
            return _tail(queue, args, out)
        if args.command == "purge":
            out.write("%d\n" % queue.purge())
        elif args.command == "pause":
            out.write(queue.pause() + "\n")
        elif args.command == "resume":
            out.write(queue.resume() + "\n")
        elif args.command == "policy":
            out.write((queue.set_policy(args.value) if args.value else queue.get_policy()) + "\n")
        return EXIT_OK
    except ClientError as exc:
        err.write("restmq-cli: %s\n" % exc)
    except (ConnectionError, TimeoutError, socket.gaierror, http.client.HTTPException) as exc:
        err.write("restmq-cli: cannot talk to %s: %s\n" % (args.url, exc or type(exc).__name__))
    except (OSError, ValueError) as exc:
        # an unreadable file, input that is not UTF-8, a malformed --url
        err.write("restmq-cli: %s\n" % exc)
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
