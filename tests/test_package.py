"""The package as a pip user gets it: ``python -m build`` (sdist, then the wheel
built from that sdist), ``twine check``, README's "Install with pip" commands run
as written in a fresh virtualenv (PyPI for the dependencies), then ``twistd -n
restmq`` started from an empty folder, outside any checkout, round-trips a message.

Slow (a build and a virtualenv), so it is done once, in a module fixture."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tarfile
import time
import urllib.request
import zipfile

import pytest

from restmq.tap import CYCLONE_INSTALL
from tests.helpers import free_port
from tests.processes import ROOT

pytestmark = pytest.mark.timeout(1200)


def readme_pip_commands():
    """The ``pip install`` lines of README's "Install with pip" code block, in order."""
    with open(os.path.join(ROOT, "README.rst"), encoding="utf-8") as handle:
        text = handle.read()
    section = text.split("\nInstall with pip\n================\n", 1)[1].split("\n=====", 1)[0]
    block = section.split(".. code-block:: sh\n", 1)[1]
    lines = []
    for line in block.splitlines()[1:]:
        if line and not line.startswith(" "):
            break  # the end of the indented block
        command = line.strip().split("  #", 1)[0].strip()
        if command.startswith("pip install"):
            lines.append(command)
    return lines


def clean_env(venv, **extra):
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "VIRTUAL_ENV", "PROMETHEUS_MULTIPROC_DIR")}
    env["PATH"] = os.path.join(venv, "bin") + os.pathsep + env.get("PATH", "")
    env["VIRTUAL_ENV"] = venv
    env.update(extra)
    return env


def sh(command, cwd, env, timeout=900):
    done = subprocess.run(command, shell=isinstance(command, str), cwd=cwd, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(work folder, dist folder, venv, README's pip commands, what the first step said)."""
    work = str(tmp_path_factory.mktemp("pip-user"))
    dist = os.path.join(work, "dist")
    built = sh([sys.executable, "-m", "build", "--outdir", dist, ROOT], work, dict(os.environ))
    assert built.returncode == 0, built.stdout.decode()[-3000:] + built.stderr.decode()[-3000:]
    venv = os.path.join(work, "venv")
    made = sh([sys.executable, "-m", "venv", venv], work, dict(os.environ))
    assert made.returncode == 0, made.stderr
    commands = readme_pip_commands()
    assert commands == ["pip install dist/restmq-*.whl", "pip install --no-deps cyclone==1.3"], commands
    env = clean_env(venv)
    first = sh(commands[0], work, env)
    assert first.returncode == 0, first.stdout.decode()[-3000:] + first.stderr.decode()[-3000:]
    empty = os.path.join(work, "empty")
    os.mkdir(empty)
    # the package alone, without cyclone yet: one line naming the command, exit 1
    without_cyclone = sh(["twistd", "-n", "restmq"], empty, env, timeout=60)
    for command in commands[1:]:
        done = sh(command, work, env)
        assert done.returncode == 0, done.stderr.decode()[-3000:]
    return {"work": work, "dist": dist, "venv": venv, "env": env, "empty": empty,
            "without_cyclone": without_cyclone}


def test_build_makes_a_wheel_and_an_sdist_that_twine_accepts(installed):
    names = sorted(os.listdir(installed["dist"]), key=lambda name: not name.endswith(".tar.gz"))
    assert len(names) == 2 and names[0].endswith(".tar.gz") and names[1].endswith("-py3-none-any.whl"), names
    paths = [os.path.join(installed["dist"], name) for name in names]
    checked = sh([sys.executable, "-m", "twine", "check", "--strict", *paths], installed["work"],
                 dict(os.environ), timeout=120)
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
    with tarfile.open(paths[0]) as sdist:
        members = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    for needed in ("LICENSE", "pyproject.toml", "setup.cfg", "Makefile", "requirements.txt",
                   "requirements-test.txt", "etc/restmq.conf", "etc/acl.conf", "etc/nginx/restmq.conf",
                   "etc/systemd/restmq.service", "tests/conftest.py", "tests/test_package.py",
                   "tests/schemathesis.toml", "twisted/plugins/restmq_plugin.py",
                   "restmq/static/openapi.json", "restmq/storage/lua/add.lua"):
        assert needed in members, needed
    assert any(name.startswith("tests/data/") for name in members)
    with zipfile.ZipFile(paths[1]) as wheel:
        files = set(wheel.namelist())
        metadata = wheel.read([name for name in files if name.endswith(".dist-info/METADATA")][0]).decode()
    assert "twisted/plugins/restmq_plugin.py" in files and "restmq/storage/lua/take.lua" in files
    assert not any(name.startswith(("tests/", "bench/")) for name in files)
    assert "License: MIT" in metadata and "Description-Content-Type: text/x-rst" in metadata
    assert re.search(r"^Requires-Dist: hiredis", metadata, re.M)
    with open(os.path.join(ROOT, "LICENSE")) as handle:
        assert handle.readline().strip() == "MIT License"


def test_without_cyclone_the_broker_says_how_to_install_it_in_one_line(installed):
    done = installed["without_cyclone"]
    assert done.returncode == 1
    assert done.stdout == b""
    assert done.stderr.decode().splitlines() == [
        "restmq: cyclone is not installed; install it with: %s" % CYCLONE_INSTALL]


def test_commands_are_on_path_and_work_from_any_folder(installed):
    env, empty = installed["env"], installed["empty"]
    imported = sh(["python", "-c", "import restmq.client, restmq.tap; print(restmq.client.__file__)"],
                  empty, env, timeout=60)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.decode().startswith(installed["venv"])
    for command in (["restmq-cli", "--help"], ["restmq", "--help"], ["twistd", "restmq", "--help"]):
        done = sh(command, empty, env, timeout=60)
        assert done.returncode == 0, (command, done.stderr.decode())


def test_outside_a_checkout_the_data_dir_is_the_users_or_var_lib(installed):
    home = os.path.join(installed["work"], "home")
    env = dict(installed["env"], HOME=home)
    env.pop("XDG_DATA_HOME", None)
    done = sh(["python", "-c", "from restmq.config import load_config; print(load_config().redis.data_dir)"],
              installed["empty"], env, timeout=60)
    assert done.returncode == 0, done.stderr
    expected = "/var/lib/restmq/redis" if os.geteuid() == 0 else \
        os.path.join(home, ".local", "share", "restmq", "redis")
    assert done.stdout.decode().strip() == expected


def test_twistd_from_an_empty_folder_round_trips_a_message(installed):
    port = free_port()
    env = installed["env"]
    log_path = os.path.join(installed["work"], "twistd.log")
    url = "http://127.0.0.1:%d" % port
    data = os.path.join(installed["work"], "data")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["twistd", "-n", "restmq", "--port", str(port), "--data-dir", data],
                                cwd=installed["empty"],
                                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def log():
        with open(log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                reply = urllib.request.urlopen(url + "/q/pip", data=b"value=from%20a%20wheel",
                                               timeout=5).read()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, log()
                time.sleep(0.1)
        assert reply == b"pip:1\r\n"
        popped = urllib.request.urlopen(url + "/q/pip", timeout=5).read()
        assert b'"value":"from a wheel"' in popped
        assert "RestMQ on %s \N{EM DASH} dashboard %s/dashboard/, data in %s" % (url, url, data) in log()
        assert os.path.exists(os.path.join(data, "appendonly.aof")) or \
            os.path.isdir(os.path.join(data, "appendonlydir"))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    left = os.listdir(installed["empty"])
    assert left == [], "left in the current folder: %s" % left
    assert "Traceback" not in log(), log()
