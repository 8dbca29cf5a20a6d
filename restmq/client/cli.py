"""restmq-cli: put, get, reserve, ack, nack, work, dead, redrive, settings, tail,
stats, purge, policy, pause and resume from a shell.

Built on :mod:`restmq.client`. ``python -m restmq.client.cli`` runs it too. Exit status:
0 done, 1 ``get``/``reserve`` found nothing, 2 bad usage, 3 the broker refused or
could not be reached (the reason goes to standard error).
"""

from __future__ import annotations

import argparse
import http.client
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from typing import IO, Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import orjson

from restmq import __version__
from restmq.client import DEFAULT_URL, Broker, ClientError, ConnectionFailed, Message, Queue

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
        keys = queue.put(*args.messages, ttl=args.ttl, delay=args.delay,
                         idempotency_key=args.idempotency_key)
        for key in [keys] if isinstance(keys, str) else keys:
            out.write(key + "\n")
        return EXIT_OK
    if args.file in (None, "-"):
        source, total = stdin, None
        if _is_terminal(stdin):
            # a bare `restmq-cli put jobs` would otherwise look hung
            stderr.write("restmq-cli: reading messages from standard input, one per line "
                         "(Ctrl-D ends, Ctrl-C cancels)\n")
            stderr.flush()
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


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _json(payload: Any) -> str:
    """``payload`` as one line of JSON."""
    return orjson.dumps(payload).decode()


def _message_json(message: Message) -> str:
    payload: Dict[str, Any] = {"key": message.key, "value": message.value}
    if message.receipt is not None:
        payload.update(receipt=message.receipt, deliveries=message.deliveries)
    return _json(payload)


def _reserve(queue: Queue, args: argparse.Namespace, out: IO[str]) -> int:
    messages = queue.reserve(args.lease, args.count or 1, block=args.wait > 0, timeout=args.wait)
    for message in messages:
        out.write(_message_json(message) + "\n")
    return EXIT_OK if messages else EXIT_EMPTY


def _dead(queue: Queue, args: argparse.Namespace, out: IO[str]) -> int:
    letters = queue.dead(args.count)
    if args.json:
        for letter in letters:
            out.write(_json({"key": letter.key, "value": letter.value, "reason": letter.reason,
                             "deliveries": letter.deliveries, "from": letter.source,
                             "died_at": letter.died_at}) + "\n")
        return EXIT_OK
    rows: List[Tuple[str, ...]] = [("key", "deliveries", "reason", "from", "value")]
    for letter in letters:
        value = letter.value if len(letter.value) <= 60 else letter.value[:57] + "..."
        rows.append((letter.key, str(letter.deliveries), str(letter.reason), str(letter.source),
                     value.replace("\n", "\\n")))
    _table(rows, out)
    return EXIT_OK


def _settings(queue: Queue, args: argparse.Namespace, out: IO[str]) -> int:
    if args.changes:
        changes: Dict[str, Any] = {}
        for change in args.changes:
            name, equals, value = change.partition("=")
            if not equals or not name:
                raise _UsageError("settings are NAME=VALUE (an empty VALUE removes one): %r" % change)
            changes[name] = value or None
        settings = queue.configure(**changes)
    else:
        settings = queue.settings()
    if args.json:
        out.write(_json(settings) + "\n")
    else:
        for name in sorted(settings):
            out.write("%-14s %s\n" % (name, "-" if settings[name] is None else settings[name]))
    return EXIT_OK


class _CommandFailed(Exception):
    """The command of ``work`` exited with a non-zero status (the message goes back)."""


class _LogFormat(logging.Formatter):
    """One line per record; a failed command's traceback says nothing, so it is left out."""

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info and isinstance(record.exc_info[1], _CommandFailed):
            failure = record.exc_info[1]
            plain = logging.makeLogRecord(dict(record.__dict__, exc_info=None, exc_text=None))
            return "%s: %s" % (super().format(plain), failure)
        return super().format(record)


def _work(queue: Queue, args: argparse.Namespace, err: IO[str]) -> int:
    command = list(args.argv)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise _UsageError("work needs a command: restmq-cli work QUEUE -- COMMAND [ARGS...]")
    if shutil.which(command[0]) is None:
        raise _UsageError("work: command not found: %s" % command[0])

    def run(message: Message) -> None:
        env = dict(os.environ, RESTMQ_QUEUE=queue.name, RESTMQ_KEY=message.key,
                   RESTMQ_RECEIPT=message.receipt or "", RESTMQ_DELIVERIES=str(message.deliveries))
        done = subprocess.run(command, input=message.value.encode("utf-8"), env=env)
        if done.returncode != 0:
            raise _CommandFailed("%s exited with status %d" % (command[0], done.returncode))

    handler = logging.StreamHandler(err)
    handler.setFormatter(_LogFormat("restmq-cli work: %(message)s"))
    logger = logging.getLogger("restmq.client")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        count = queue.work(run, lease=args.lease, concurrency=args.concurrency,
                           idle_timeout=args.idle_timeout, limit=args.limit, retry_delay=args.retry_delay,
                           backoff=args.backoff, max_retry_delay=args.max_retry_delay)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    err.write("restmq-cli work: %d message(s) handled\n" % count)
    return EXIT_OK


class _UsageError(Exception):
    pass


def _table(rows: List[Tuple[str, ...]], out: IO[str]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() + "\n")


def _get(queue: Queue, args: argparse.Namespace, out: IO[str]) -> int:
    message = queue.get_message(block=args.wait > 0, timeout=args.wait)
    if message is None:
        return EXIT_EMPTY
    if args.json:
        out.write(_json({"key": message.key, "value": message.value}) + "\n")
    else:
        out.write(message.value + "\n")
    return EXIT_OK


def _tail(queue: Queue, args: argparse.Namespace, out: IO[str]) -> int:
    def show(key: str, value: str) -> None:
        out.write((_json({"key": key, "value": value}) if args.json else value) + "\n")
        out.flush()

    if not args.follow:
        for message in reversed(queue.last(args.lines)):
            show(message.key, message.value)
        return EXIT_OK
    for message in queue.subscribe(messages=True):
        show(message.key, message.value)
    return EXIT_OK


_COLUMNS = ("len", "inflight", "delayed", "dead", "status", "policy", "oldest_age")


def _stats(broker: Broker, queue: Optional[Queue], args: argparse.Namespace, out: IO[str]) -> int:
    if queue is not None:
        payload: Any = queue.stats()
        if args.json:
            out.write(_json(payload) + "\n")
        else:
            for name in _COLUMNS + ("subscribers", "redis"):
                out.write("%-12s %s\n" % (name, payload.get(name)))
        return EXIT_OK
    payload = broker.stats()
    if args.json:
        out.write(_json(payload) + "\n")
        return EXIT_OK
    rows: List[Tuple[str, ...]] = [("queue",) + _COLUMNS]
    for name, entry in sorted(payload["queues"].items()):
        rows.append((name,) + tuple("-" if entry.get(c) is None else str(entry.get(c)) for c in _COLUMNS))
    _table(rows, out)
    return EXIT_OK


#: the commands that show what they read: (queue, args, out) -> exit status
_SHOWS: Dict[str, Callable[[Queue, argparse.Namespace, IO[str]], int]] = {
    "get": _get, "tail": _tail, "reserve": _reserve, "dead": _dead, "settings": _settings}

#: the commands that print the broker's one answer (a count, a status, a policy)
_ANSWERS: Dict[str, Callable[[Queue, argparse.Namespace], str]] = {
    "ack": lambda queue, args: "%d" % queue.ack(*args.receipts),
    "nack": lambda queue, args: "%d" % queue.nack(*args.receipts, delay=args.delay),
    "redrive": lambda queue, args: "%d" % queue.redrive(args.count),
    "purge": lambda queue, args: "%d" % queue.purge(),
    "pause": lambda queue, args: queue.pause(),
    "resume": lambda queue, args: queue.resume(),
    "policy": lambda queue, args: queue.set_policy(args.value) if args.value else queue.get_policy(),
}


def _queue_command(commands: Any, name: str, text: str, **options: Any) -> argparse.ArgumentParser:
    """A command whose first argument names the queue."""
    command: argparse.ArgumentParser = commands.add_parser(name, help=text, **options)
    command.add_argument("queue")
    return command


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="restmq-cli", description="Talk to a RestMQ broker.",
        epilog="Exit status: 0 done, 1 get/reserve found nothing, 2 bad usage, 3 the broker refused "
               "or could not be reached.")
    parser.add_argument("--version", action="version", version="restmq-cli " + __version__)
    parser.add_argument("--url", default=os.environ.get("RESTMQ_URL", DEFAULT_URL),
                        help="the broker (env RESTMQ_URL; default %(default)s)")
    parser.add_argument("--token", default=os.environ.get("RESTMQ_TOKEN"),
                        help="Bearer token of an ACL (env RESTMQ_TOKEN)")
    parser.add_argument("--user", help="USER:PASSWORD for HTTP Basic")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the broker")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    put = _queue_command(commands, "put", "add messages: arguments, or one per line of a file or stdin")
    put.add_argument("messages", nargs="*", help="messages (none: read lines from --file or stdin)")
    put.add_argument("-f", "--file", help="one message per line (- for stdin)")
    put.add_argument("--batch", type=int, default=500, help="messages per request (1-1000)")
    put.add_argument("--ttl", type=int, help="seconds each message lives")
    put.add_argument("--delay", type=float, help="seconds before messages can be taken")
    put.add_argument("--idempotency-key", help="stored once per key (within the broker's "
                     "idempotency_window); retried safely after a connection error")
    put.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")

    get = _queue_command(commands, "get", "take the oldest message")
    get.add_argument("-w", "--wait", type=float, default=0.0, help="long-poll up to this many seconds")
    get.add_argument("--json", action="store_true", help="print {key, value}")

    reserve = _queue_command(commands, "reserve", "lease messages: one JSON line each, with its receipt")
    reserve.add_argument("-l", "--lease", type=float, help="seconds (default: the queue's lease_seconds)")
    reserve.add_argument("-n", "--count", type=int, help="up to this many (1-1000)")
    reserve.add_argument("-w", "--wait", type=float, default=0.0, help="long-poll up to this many seconds")

    ack = _queue_command(commands, "ack", "done with reserved messages (prints how many)")
    ack.add_argument("receipts", nargs="+", metavar="RECEIPT")

    nack = _queue_command(commands, "nack", "give reserved messages back (prints how many)")
    nack.add_argument("receipts", nargs="+", metavar="RECEIPT")
    nack.add_argument("--delay", type=float, help="seconds before they come back")

    work = _queue_command(
        commands, "work",
        "run COMMAND once per message, the body on its stdin: ack on exit 0, else retry later",
        description="Run COMMAND once per message with the message on its standard input and "
                    "RESTMQ_QUEUE, RESTMQ_KEY, RESTMQ_RECEIPT, RESTMQ_DELIVERIES in its environment. "
                    "Exit 0 acks the message; any other status gives it back after the retry delay "
                    "(until the queue's max_receives sends it to the dead letters). SIGTERM or Ctrl-C "
                    "lets the running command finish, then stops.")
    work.add_argument("--lease", type=float, help="seconds of each lease, extended while the command runs")
    work.add_argument("-c", "--concurrency", type=int, default=1, help="commands running at once")
    work.add_argument("--limit", type=int, help="stop after this many messages")
    work.add_argument("--idle-timeout", type=float, help="stop after this many seconds with nothing to do")
    work.add_argument("--retry-delay", type=float, default=1.0, help="seconds before a failed message "
                      "comes back the first time (default 1)")
    work.add_argument("--backoff", type=float, default=2.0, help="the delay is multiplied by this at "
                      "each new failure (default 2)")
    work.add_argument("--max-retry-delay", type=float, default=300.0, help="at most (default 300)")
    work.add_argument("argv", nargs="*", metavar="-- COMMAND [ARGS...]")

    dead = _queue_command(commands, "dead", "the dead letters, with why they died")
    dead.add_argument("-n", "--count", type=int, default=10, help="how many (1-1000)")
    dead.add_argument("--json", action="store_true", help="one JSON object per line")

    redrive = _queue_command(commands, "redrive", "dead letters back to the queue (prints how many)")
    redrive.add_argument("-n", "--count", type=int, help="at most this many (default: all)")

    settings = _queue_command(commands, "settings", "show the queue's settings, or set NAME=VALUE ...")
    settings.add_argument("changes", nargs="*", metavar="NAME=VALUE",
                          help="maxlen, overflow, max_receives, lease_seconds, history_size, ttl")
    settings.add_argument("--json", action="store_true")

    tail = _queue_command(commands, "tail", "the newest waiting messages; -f streams new ones")
    tail.add_argument("-n", "--lines", type=int, default=10, help="how many (without -f)")
    tail.add_argument("-f", "--follow", action="store_true",
                      help="stream messages as they come (a streaming consumer: it takes them)")
    tail.add_argument("--json", action="store_true", help="print {key, value}")

    stats = commands.add_parser("stats", help="counts of one queue, or a table of all")
    stats.add_argument("queue", nargs="?")
    stats.add_argument("--json", action="store_true")

    for name, text in (("purge", "remove every message"), ("pause", "stop delivering to consumers"),
                       ("resume", "deliver again")):
        _queue_command(commands, name, text)

    policy = _queue_command(commands, "policy", "show or set the distribution policy")
    policy.add_argument("value", nargs="?", choices=("broadcast", "roundrobin"))
    return parser


def main(argv: Optional[Sequence[str]] = None, stdin: Optional[IO[bytes]] = None,
         stdout: Optional[IO[str]] = None, stderr: Optional[IO[str]] = None) -> int:
    """Run one command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command: List[str] = []
    if "--" in argv and "work" in argv[:argv.index("--")]:
        # work's COMMAND follows "--": options before it are ours, everything after is its
        split = argv.index("--")
        argv, command = argv[:split], argv[split + 1:]
    args = _parser().parse_args(argv)
    if args.command == "work":
        args.argv = list(args.argv) + command
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
        if args.command == "work":
            return _work(queue, args, err)
        if args.command in _SHOWS:
            return _SHOWS[args.command](queue, args, out)
        out.write(_ANSWERS[args.command](queue, args) + "\n")
        return EXIT_OK
    except _UsageError as exc:
        err.write("restmq-cli: %s\n" % exc)
        return EXIT_USAGE
    except (ClientError, ConnectionFailed) as exc:
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
