"""The ``enroute`` command line: graph build, org create, busy port, shared Redis."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson
import psutil
import pytest

from api.cli import build_parser
from support import REPO_ROOT, Api, ServerProcess, free_port, shared_dir, unique_name
from tracker.settings import SettingsError, load_settings

# A server that hangs instead of exiting fails the test after this long.
EXIT_LIMIT_S = 60


def enroute(*args: str, timeout_s: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        check=False,
        cwd=REPO_ROOT,
        env=embedded_redis_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def embedded_redis_env(**env: str) -> dict[str, str]:
    """Return the environment of a command that starts its own embedded Redis."""
    merged = {**os.environ, **env}
    merged.pop("ENROUTE_REDIS_URL", None)
    return merged


@contextmanager
def busy_port() -> Iterator[int]:
    """Listen on a free port of 127.0.0.1 for the duration of the block."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def redis_running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_for_redis_exit(pid: int, timeout_s: float = 15.0) -> bool:
    """Wait until the redis-server ``pid`` has exited; return whether it did."""
    deadline = time.monotonic() + timeout_s
    while redis_running(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not redis_running(pid)


def assert_redis_stopped(data_dir: Path) -> None:
    # A serve process that gets SIGTERM exits before its embedded Redis,
    # which follows it through the parent-death signal.
    pid_path = data_dir / "redis.pid"
    if pid_path.exists():
        assert wait_for_redis_exit(int(pid_path.read_text()))


def test_graph_build_reports_graph(tmp_path: Path) -> None:
    shared = shared_dir()
    if shared is None:
        pytest.skip("shared test data not found beside the repository (set ENROUTE_SHARED_DIR)")
    result = enroute("graph", "build", str(shared / "data/osm/krems.osm.gz"), "--cache-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "nodes" in result.stdout
    assert list(tmp_path.glob("*.npz"))


def test_graph_build_missing_file_error(tmp_path: Path) -> None:
    result = enroute("graph", "build", str(tmp_path / "nope.osm.pbf"))
    assert result.returncode == 1
    assert "nope.osm.pbf" in result.stderr


@pytest.mark.parametrize("name", ["some.txt", "roads.json", "maps/helsinki"])
def test_graph_build_missing_path_error(tmp_path: Path, name: str) -> None:
    # The name is relative to the command's folder, where no such file exists.
    result = subprocess.run(
        [sys.executable, "-m", "api.cli", "graph", "build", name],
        check=False,
        cwd=tmp_path,
        env={**embedded_redis_env(), "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=EXIT_LIMIT_S,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"enroute: graph source file not found: {name}"]


def test_graph_build_geocoding_failure(tmp_path: Path) -> None:
    # Nominatim and Overpass point at a closed port of 127.0.0.1, so the
    # request fails the way it does when the machine is offline.
    closed_port = free_port()
    script = (
        "import sys\n"
        "import osmnx\n"
        f"osmnx.settings.nominatim_url = 'http://127.0.0.1:{closed_port}/'\n"
        f"osmnx.settings.overpass_url = 'http://127.0.0.1:{closed_port}/'\n"
        "osmnx.settings.use_cache = False\n"
        "import api.cli\n"
        "sys.exit(api.cli.main(sys.argv[1:]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, "graph", "build", "Helsinki, Finland", "--cache-dir", str(tmp_path)],
        check=False,
        cwd=REPO_ROOT,
        env=embedded_redis_env(),
        capture_output=True,
        text=True,
        timeout=EXIT_LIMIT_S,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("enroute: could not geocode place 'Helsinki, Finland' with Nominatim: ")
    assert "Connection refused" in message
    assert message.endswith("or pass an OSM file")


def test_graph_build_directory_error(tmp_path: Path) -> None:
    source = tmp_path / "dir.osm"
    source.mkdir()
    result = enroute("graph", "build", str(source), "--cache-dir", str(tmp_path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"enroute: graph source must be a file, but {source} is a directory"
    )


def cut_pbf(path: Path) -> Path:
    """Write the first 3000 bytes of the bundled Helsinki extract to ``path``."""
    from eta.build import default_source_path

    path.write_bytes(default_source_path().read_bytes()[:3000])
    return path


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("broken.osm", b'<osm version="0.6"><node id="1" lat="60.1"', "XML parsing error"),
        ("noversion.osm", b"<osm></osm>", "missing version attribute"),
        ("random.osm.pbf", bytes(range(256)) * 4, "PBF error"),
        ("empty.osm.pbf", b"", "PBF error"),
        (
            "coordinate.osm",
            b'<osm version="0.6"><node id="1" lat="abc" lon="24.9"/></osm>',
            "wrong format for coordinate: 'abc'",
        ),
        ("id.osm", b'<osm version="0.6"><node id="x" lat="60.1" lon="24.9"/></osm>', "illegal id: 'x'"),
        ("broken.graphml", b"<graphml><graph", "as GraphML"),
    ],
)
def test_graph_build_corrupt_file_error(tmp_path: Path, name: str, content: bytes, reason: str) -> None:
    source = tmp_path / name
    source.write_bytes(content)
    result = enroute("graph", "build", str(source), "--cache-dir", str(tmp_path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith(f"enroute: could not parse {source} as ")
    assert reason in message


def test_graph_build_cut_pbf_error(tmp_path: Path) -> None:
    source = cut_pbf(tmp_path / "cut.osm.pbf")
    result = enroute("graph", "build", str(source), "--cache-dir", str(tmp_path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"enroute: could not parse {source} as OSM data: PBF error: unexpected EOF"
    )


def test_graph_build_debug_shows_traceback(tmp_path: Path) -> None:
    source = tmp_path / "random.osm.pbf"
    source.write_bytes(bytes(range(256)) * 4)
    result = enroute("--log-level", "debug", "graph", "build", str(source), "--cache-dir", str(tmp_path))
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert "RuntimeError: PBF error" in result.stderr


def test_org_create_unreachable_redis_one_line() -> None:
    url = f"redis://admin:S3CRETpw@127.0.0.1:{free_port()}/0"
    result = enroute("org", "create", unique_name(), "--redis-url", url, timeout_s=EXIT_LIMIT_S)
    assert result.returncode == 2
    assert result.stderr.startswith("enroute: redis is unreachable: ")
    assert result.stderr.count("\n") == 1
    assert "S3CRETpw" not in result.stderr


def test_org_create_twice_fails(redis_url: str) -> None:
    name = unique_name("twice")
    first = enroute("org", "create", name, "--redis-url", redis_url)
    second = enroute("org", "create", name, "--redis-url", redis_url)
    assert first.returncode == 0, first.stderr
    assert second.returncode == 1
    assert "exists already" in second.stderr


def test_org_create_prints_key_once(redis_url: str) -> None:
    result = enroute("org", "create", unique_name("print-key"), "--redis-url", redis_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ek_") == 1


@pytest.mark.parametrize(
    ("name", "value", "rule"),
    [
        ("ENROUTE_ETA_MIN_INTERVAL_S", "inf", "the value should be a finite number, got 'inf'"),
        ("ENROUTE_ETA_MIN_INTERVAL_S", "-1", "the value should be greater than or equal to 0, got '-1'"),
        ("ENROUTE_VIEWER_STALL_S", "nan", "the value should be a finite number, got 'nan'"),
        ("ENROUTE_SHARE_TTL_S", "abc", "the value should be a valid number"),
    ],
)
def test_serve_invalid_setting_one_line(tmp_path: Path, name: str, value: str, rule: str) -> None:
    result = enroute("serve", "--data-dir", str(tmp_path / "data"), timeout_s=EXIT_LIMIT_S, **{name: value})
    assert result.returncode == 2
    assert result.stderr.startswith(f"enroute: {name} is invalid: {rule}")
    assert result.stderr.count("\n") == 1


def test_serve_flag_overrides_invalid_environment(
    tmp_path: Path, redis_url: str, graph_cache_dir: Path
) -> None:
    # The worker processes must take the flag too, not the variable.
    server = ServerProcess(
        redis_url, tmp_path / "server.log", args=("--workers", "2"),
        ENROUTE_WORKERS="abc", ENROUTE_GRAPH_CACHE_DIR=str(graph_cache_dir),
    )  # fmt: skip
    server.start()
    try:
        assert httpx.get(server.base_url + "/healthz", timeout=5).status_code == 200
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("flag", "value", "rule"),
    [
        ("--duration", "nan", "must be a number of seconds above 0 and at most 2592000, got 'nan'"),
        ("--service-s", "1e300", "must be a number of seconds at least 0 and at most 2592000, got '1e300'"),
        ("--contractors", "-1", "must be a whole number of at least 1, got '-1'"),
        ("--interval", "0", "must be a number of seconds above 0 and at most 2592000, got '0'"),
    ],
)
def test_demo_invalid_flag_one_line(flag: str, value: str, rule: str) -> None:
    result = enroute("demo", flag, value, timeout_s=EXIT_LIMIT_S)
    assert result.returncode == 2
    assert f"argument {flag}: {rule}" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_invalid_flag_named(tmp_path: Path) -> None:
    result = enroute("serve", "--port", "70000", "--data-dir", str(tmp_path / "data"), timeout_s=EXIT_LIMIT_S)
    assert result.returncode == 2
    assert result.stderr.startswith("enroute: --port is invalid: the value should be less than or equal to 65535")


def test_serve_busy_port_exits(tmp_path: Path) -> None:
    with busy_port() as port:
        result = enroute(
            "serve", "--port", str(port), "--data-dir", str(tmp_path / "data"), timeout_s=EXIT_LIMIT_S
        )
    assert result.returncode == 3
    assert f"127.0.0.1:{port}: address already in use" in result.stderr
    assert "Traceback" not in result.stderr
    assert_redis_stopped(tmp_path / "data")


@pytest.mark.parametrize(
    ("flags", "env", "named"),
    [
        (["--host", "999.1.1.1"], {}, "cannot resolve --host '999.1.1.1'"),
        ([], {"ENROUTE_HOST": "999.1.1.1"}, "cannot resolve ENROUTE_HOST '999.1.1.1'"),
    ],
)
def test_serve_unresolvable_host_names_source(
    tmp_path: Path, flags: list[str], env: dict[str, str], named: str
) -> None:
    result = enroute("serve", *flags, "--data-dir", str(tmp_path / "data"), timeout_s=EXIT_LIMIT_S, **env)
    assert result.returncode == 3
    assert named in result.stderr


def test_serve_busy_port_from_variable_named(tmp_path: Path) -> None:
    with busy_port() as port:
        result = enroute(
            "serve", "--data-dir", str(tmp_path / "data"), timeout_s=EXIT_LIMIT_S, ENROUTE_PORT=str(port)
        )
    assert "or choose another ENROUTE_PORT" in result.stderr


def test_serve_lost_bind_race_exits(tmp_path: Path, graph_cache_dir: Path) -> None:
    # Another process can take the port after the check and before uvicorn
    # binds it. uvicorn then fails to bind after the app started its services.
    script = (
        "import sys\n"
        "import api.cli\n"
        "api.cli.check_port_free = lambda *args, **kwargs: None\n"
        "sys.exit(api.cli.main(sys.argv[1:]))\n"
    )
    data_dir = tmp_path / "data"
    with busy_port() as port:
        result = subprocess.run(
            [sys.executable, "-c", script, "serve", "--port", str(port), "--data-dir", str(data_dir)],
            check=False,
            cwd=REPO_ROOT,
            env=embedded_redis_env(ENROUTE_GRAPH_CACHE_DIR=str(graph_cache_dir)),
            capture_output=True,
            text=True,
            timeout=EXIT_LIMIT_S,
        )
    assert result.returncode == 3
    assert f"('127.0.0.1', {port}): address already in use" in result.stderr
    assert "stopping embedded redis-server" in result.stderr
    assert_redis_stopped(data_dir)


def test_demo_busy_port_exits(tmp_path: Path) -> None:
    with busy_port() as port:
        result = enroute(
            "demo", "--port", str(port), "--duration", "5", "--data-dir", str(tmp_path / "data"),
            timeout_s=EXIT_LIMIT_S,
        )  # fmt: skip
    assert result.returncode == 3
    assert f"127.0.0.1:{port}: address already in use" in result.stderr
    assert "Traceback" not in result.stderr


def wait_until_healthy(base_url: str, timeout_s: float) -> int:
    """Poll ``/healthz`` until it returns 200 or the time is up; return the last status."""
    status = 0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            status = httpx.get(base_url + "/healthz", timeout=1).status_code
        except httpx.HTTPError:
            status = 0
        if status == 200:
            return status
        time.sleep(0.2)
    return status


def test_serve_sharer_outlives_owner(tmp_path: Path, graph_cache_dir: Path) -> None:
    data_dir = tmp_path / "data"
    cache = {"ENROUTE_GRAPH_CACHE_DIR": str(graph_cache_dir)}
    owner = ServerProcess(None, tmp_path / "owner.log", data_dir, **cache).start()
    sharer = ServerProcess(None, tmp_path / "sharer.log", data_dir, **cache)
    try:
        sharer.start()
        assert "sharing embedded redis-server" in sharer.log_path.read_text()
        created = enroute("org", "create", unique_name("shared"), "--data-dir", str(data_dir))
        assert created.returncode == 0, created.stderr
        api_key = created.stdout.split("api key: ", 1)[1].split()[0]
        owner_redis_pid = int((data_dir / "redis.pid").read_text())

        owner.stop()
        assert wait_for_redis_exit(owner_redis_pid)

        assert wait_until_healthy(sharer.base_url, 30) == 200, sharer.log_path.read_text()[-3000:]
        api = Api(sharer.base_url, api_key)
        try:
            response = api.post("/v1/contractors", {"id": "after-owner-stopped"})
        finally:
            api.close()
        assert response.status_code == 201, response.text
    finally:
        owner.stop()
        sharer.stop()
    assert_redis_stopped(data_dir)


def simulate(url: str, api_key: str, *args: str) -> subprocess.CompletedProcess[str]:
    return enroute("simulate", "--url", url, "--api-key", api_key, "--contractors", "1", "--jobs", "1", *args)


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    return result.stderr.strip().splitlines()[-1]


def test_simulate_existing_contractor(server: ServerProcess, api: Api, org: tuple[str, str]) -> None:
    api.contractor("sim-c1")
    result = simulate(server.base_url, org[1])
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert last_line(result) == (
        "enroute: contractor sim-c1 already exists in this organisation; "
        "pass --prefix to use other ids (now 'sim')"
    )


def test_simulate_gpx_stops_at_duration(server: ServerProcess, org: tuple[str, str], tmp_path: Path) -> None:
    # About 1.2 km of streets: well over a minute at town speeds.
    track = tmp_path / "long.gpx"
    points = "".join(
        f'<trkpt lat="{60.1640 + 0.0011 * i:.5f}" lon="24.9420"/>' for i in range(12)
    )
    track.write_text(f'<gpx version="1.1"><trk><trkseg>{points}</trkseg></trk></gpx>')
    started = time.monotonic()
    result = simulate(server.base_url, org[1], "--gpx", str(track), "--duration", "11", "--prefix", "gpx")
    elapsed_s = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert elapsed_s < 40
    # One fix every 5 s: at 0, 5 and 10 s, and one at the deadline.
    assert orjson.loads(result.stdout)["pings_sent"] >= 3


def test_simulate_wrong_api_key(server: ServerProcess) -> None:
    result = simulate(server.base_url, "ek_wrong")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert last_line(result) == (
        f"enroute: the server at {server.base_url} rejected the API key (invalid API key); "
        "pass the key that `enroute org create` printed with --api-key"
    )


def test_simulate_unreachable_server() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = simulate(url, "ek_any")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert last_line(result).startswith(f"enroute: could not reach the server at {url}: ")
    assert last_line(result).endswith("check --url and that `enroute serve` is running there")


def test_simulate_invalid_gpx(tmp_path: Path) -> None:
    # The URL has no server, so the error must come before any request.
    url = f"http://127.0.0.1:{free_port()}"
    broken = tmp_path / "broken.gpx"
    broken.write_text('<gpx><trk><trkseg><trkpt lat="60.1"')
    empty = tmp_path / "empty.gpx"
    empty.write_text('<gpx version="1.1"></gpx>')
    missing = tmp_path / "missing.gpx"

    result = simulate(url, "ek_any", "--gpx", str(broken))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert last_line(result).startswith(f"enroute: could not read GPX file {broken}: Error parsing XML")

    result = simulate(url, "ek_any", "--gpx", str(empty))
    assert result.returncode == 1
    assert last_line(result) == (
        f"enroute: could not replay GPX file {empty}: track must have at least 2 points, got 0; "
        "pass a GPX file with at least 2 track or route points"
    )

    result = simulate(url, "ek_any", "--gpx", str(missing))
    assert result.returncode == 1
    assert last_line(result) == f"enroute: GPX file not found: {missing}; check the --gpx path"


def test_load_settings_long_value_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENROUTE_SHARE_TTL_S", "x" * 5000)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert str(raised.value).startswith("ENROUTE_SHARE_TTL_S is invalid")
    assert len(str(raised.value)) < 200


@pytest.mark.parametrize(
    ("variable", "value", "rule"),
    [
        ("ENROUTE_PORT", "8_000", "be a number without underscores"),
        ("ENROUTE_ETA_MIN_INTERVAL_S", "1_0", "be a number without underscores"),
        ("ENROUTE_ETA_MIN_INTERVAL_S", "1e-400", "be 0 or a number that does not round to 0"),
    ],
)
def test_load_settings_surprising_number_rejected(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, rule: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert str(raised.value) == f"{variable} is invalid: the value should {rule}, got {value!r}"


@pytest.mark.parametrize("value", ["0", "0.0", "0e5", "2.5", "1e-3"])
def test_load_settings_plain_number_accepted(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("ENROUTE_ETA_MIN_INTERVAL_S", value)
    assert load_settings().eta_min_interval_s == float(value)


def test_serve_bad_redis_url_named(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "api.cli", "serve", "--data-dir", str(tmp_path / "data")],
        check=False,
        cwd=REPO_ROOT,
        env={**os.environ, "ENROUTE_REDIS_URL": "foo://bar"},
        capture_output=True,
        text=True,
        timeout=EXIT_LIMIT_S,
    )
    assert (result.returncode, result.stderr) == (
        2,
        "enroute: ENROUTE_REDIS_URL is invalid: the value should be a URL that starts with "
        "redis://, rediss://, unix://, redis+cluster://, rediss+cluster://, got 'foo://bar'\n",
    )


def test_load_settings_empty_redis_url_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENROUTE_REDIS_URL", "")
    assert load_settings().redis_url is None


@pytest.mark.parametrize(
    ("argv", "level"),
    [
        (["graph", "build", "x.osm", "--log-level", "debug"], "debug"),
        (["--log-level", "warning", "graph", "build", "x.osm"], "warning"),
        (["graph", "build", "x.osm"], "info"),
    ],
)
def test_parser_log_level_either_side(argv: list[str], level: str) -> None:
    assert build_parser().parse_args(argv).log_level == level


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("redis://127.0.0.1:6399?cluster=false", "have cluster=true or no cluster option, not cluster=false"),
        ("redis://127.0.0.1:6399?foo=bar", "not foo"),
        ("redis://[::1", "be a valid Redis URL (Invalid IPv6 URL)"),
        ("redis://127.0.0.1:99999", "be a valid Redis URL (Port out of range 0-65535)"),
    ],
)
def test_load_settings_bad_redis_url_named(monkeypatch: pytest.MonkeyPatch, url: str, rule: str) -> None:
    monkeypatch.setenv("ENROUTE_REDIS_URL", url)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert rule in str(raised.value)


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:7000?cluster=true", "redis+cluster://127.0.0.1:7000", "unix:///tmp/r.sock?db=2"]
)
def test_load_settings_redis_url_accepted(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("ENROUTE_REDIS_URL", url)
    assert load_settings().redis_url == url
