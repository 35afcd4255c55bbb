"""The tabgrid command line: job files, errors a person sees, tokens, ./dev's interpreter."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest

from tabgrid.cli import commands as cli
from tabgrid.cli import common, demo, jobfile
from tabgrid.client.sdk import TabgridError
from tabgrid.png import encode as encode_png
from tabgrid.protocol import JobStatus, Policy, UnitCounts

ROOT = Path(__file__).resolve().parents[1]


def write_job(folder: Path, doc: object) -> Path:
    path = folder / "job.json"
    path.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    return path


@pytest.fixture
def arrays(tmp_path: Path) -> dict[str, np.ndarray]:
    made = {
        "b.npy": np.arange(12, dtype=np.float32).reshape(3, 4),
        "a0.npy": np.ones((2, 3), dtype=np.float32),
        "a1.npy": np.full((2, 3), 2, dtype=np.float32),
    }
    (tmp_path / "data").mkdir()
    for name, array in made.items():
        np.save(tmp_path / "data" / name, array)
    return made


def test_job_file_loads_arrays_relative_to_the_file(tmp_path: Path, arrays) -> None:
    path = write_job(
        tmp_path,
        {
            "kernel": "matmul",
            "name": "two blocks",
            "params": {"scale": 2},
            "policy": {"quorum": 1},
            "inputs": {"b": "data/b.npy"},
            "units": [
                {"params": {"i": 0}, "inputs": {"a": "data/a0.npy"}},
                {"params": {"i": 1}, "inputs": {"a": "data/a1.npy", "c": "data/b.npy"}},
            ],
        },
    )
    job = jobfile.load_job_file(path)
    assert (job.kernel, job.name, job.params, job.policy) == (
        "matmul",
        "two blocks",
        {"scale": 2},
        {"quorum": 1},
    )
    np.testing.assert_array_equal(job.inputs["b"], arrays["b.npy"])
    assert [unit["params"] for unit in job.units] == [{"i": 0}, {"i": 1}]
    np.testing.assert_array_equal(job.units[1]["inputs"]["a"], arrays["a1.npy"])
    # One file is one array object: the client hashes and uploads it once.
    assert job.units[1]["inputs"]["c"] is job.inputs["b"]


def test_job_file_defaults(tmp_path: Path) -> None:
    job = jobfile.load_job_file(write_job(tmp_path, {"kernel": "checksum", "units": [{}]}))
    assert (job.name, job.params, job.policy, job.inputs) == ("", {}, {}, {})
    assert job.units == [{"params": {}, "inputs": {}}]


def test_missing_job_file(tmp_path: Path) -> None:
    with pytest.raises(common.CliError, match="job file not found: .*nope.json"):
        jobfile.load_job_file(tmp_path / "nope.json")


def test_bad_json_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    path.write_text('{\n  "kernel": "matmul",\n  "units": [,]\n}\n', encoding="utf-8")
    with pytest.raises(jobfile.JobFileError) as info:
        jobfile.load_job_file(path)
    assert "not valid JSON at line 3, column 13" in str(info.value)
    assert str(info.value).startswith(str(path))


def test_missing_npy_names_the_input_and_unit(tmp_path: Path, arrays) -> None:
    path = write_job(
        tmp_path,
        {
            "kernel": "matmul",
            "units": [{"inputs": {"a": "data/a0.npy"}}, {"inputs": {"a": "x.npy"}}],
        },
    )
    with pytest.raises(jobfile.JobFileError) as info:
        jobfile.load_job_file(path)
    assert info.value.errors == [
        f"input 'a' (\"inputs\" of unit 1): file not found: x.npy (looked for {tmp_path / 'x.npy'})"
    ]


def test_every_mistake_is_listed_at_once(tmp_path: Path) -> None:
    path = write_job(
        tmp_path,
        {
            "name": 3,
            "polcy": {},
            "policy": {"quorum": 0},
            "params": [],
            "units": [{"param": {}}, 5, {"inputs": {"a": 1}}],
        },
    )
    with pytest.raises(jobfile.JobFileError) as info:
        jobfile.load_job_file(path)
    errors = info.value.errors
    assert (
        "unknown key 'polcy' in the job (expected: inputs, kernel, name, params, policy, units)"
        in errors
    )
    assert '"kernel" is required: the name of a kernel, e.g. "matmul"' in errors
    assert '"name" must be a string, got a int' in errors
    assert '"params" must be an object, got a list' in errors
    assert '"policy": Expected `int` >= 1 - at `$.quorum`' in errors
    assert "unknown key 'param' in unit 0 (expected: inputs, params)" in errors
    assert "unit 1 must be an object, got a int" in errors
    assert "\"inputs\" of unit 2: 'a' must be the path of a .npy file" in errors
    assert len(errors) == 8


def test_units_are_required(tmp_path: Path) -> None:
    with pytest.raises(jobfile.JobFileError, match='"units" is required'):
        jobfile.load_job_file(write_job(tmp_path, {"kernel": "matmul", "units": []}))


def test_not_an_object(tmp_path: Path) -> None:
    with pytest.raises(jobfile.JobFileError, match="expected a JSON object, got a list"):
        jobfile.load_job_file(write_job(tmp_path, ["matmul"]))


def test_arrays_tabgrid_cannot_carry(tmp_path: Path) -> None:
    np.save(tmp_path / "c.npy", np.zeros(3, dtype=np.complex64))
    np.save(tmp_path / "o.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "t.npy").write_text("not numpy", encoding="utf-8")
    path = write_job(
        tmp_path,
        {"kernel": "wgsl", "inputs": {"c": "c.npy", "o": "o.npy", "t": "t.npy"}, "units": [{}]},
    )
    with pytest.raises(jobfile.JobFileError) as info:
        jobfile.load_job_file(path)
    complex_error, object_error, text_error = info.value.errors
    assert complex_error.startswith("input 'c' (\"inputs\"): c.npy has dtype complex64; use one of")
    assert "o.npy is not a .npy array" in object_error
    assert "t.npy is not a .npy array" in text_error


def test_big_endian_arrays_become_little_endian(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.arange(4, dtype=">i4"))
    job = jobfile.load_job_file(
        write_job(tmp_path, {"kernel": "k", "inputs": {"x": "x.npy"}, "units": [{}]})
    )
    assert job.inputs["x"].dtype == np.dtype("<i4")
    assert job.inputs["x"].tolist() == [0, 1, 2, 3]


def test_submit_command_reports_file_errors_without_a_server(tmp_path: Path, capsys) -> None:
    path = write_job(tmp_path, {"kernel": "matmul", "units": [{"inputs": {"a": "gone.npy"}}]})
    code = cli.main(["submit", str(path), "--url", "http://127.0.0.1:9", "--token", "t"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith(f"error: {path}: input 'a'")
    assert "file not found: gone.npy" in err


def test_find_token_order(tmp_path: Path) -> None:
    (tmp_path / common.TOKEN_FILE).write_text("from-file\n", encoding="utf-8")
    env = {"TABGRID_TOKEN": "from-env"}
    assert common.find_token("explicit", tmp_path, env) == "explicit"
    assert common.find_token(None, tmp_path, env) == "from-env"
    assert common.find_token(None, tmp_path, {}) == "from-file"


def test_no_token_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(common.CliError) as info:
        common.find_token(None, tmp_path, {})
    assert "pass --token, set TABGRID_TOKEN" in str(info.value)
    assert str(tmp_path / common.TOKEN_FILE) in str(info.value)


def test_problem_documents_show_title_detail_and_each_error() -> None:
    exc = TabgridError(422, "Invalid job", "2 problems", ["unit 0: no input 'a'", "bad kernel"])
    assert common.describe_error(exc) == (
        "Invalid job (HTTP 422)\n  2 problems\n  - unit 0: no input 'a'\n  - bad kernel"
    )


def test_unreachable_coordinator_is_explained(capsys) -> None:
    exc = httpx.ConnectError("Connection refused")
    text = common.describe_error(exc, "http://127.0.0.1:9")
    assert text.startswith("cannot reach the coordinator at http://127.0.0.1:9: Connection refused")
    assert "tabgrid serve" in text


def test_jobs_command_against_a_closed_port(capsys) -> None:
    port = _closed_port()
    code = cli.main(["jobs", "--url", f"http://127.0.0.1:{port}", "--token", "t"])
    assert code == 1
    assert "cannot reach the coordinator" in capsys.readouterr().err


def _status(**changes: object) -> JobStatus:
    fields: dict[str, object] = dict(
        id=7,
        name="tiles",
        kernel="mandelbrot",
        owner="demo",
        state="running",
        policy=Policy(quorum=2),
        units=48,
        counts=UnitCounts(done=12, validating=36),
        fraction_done=0.25,
        created_at=0.0,
        updated_at=0.0,
        rate=1.5,
        eta_s=24.0,
    )
    fields.update(changes)
    return JobStatus(**fields)  # type: ignore[arg-type]


def test_jobs_table() -> None:
    table = cli.format_jobs([_status(), _status(id=8, name="m", kernel="matmul", state="done")])
    assert table.splitlines() == [
        "ID  NAME   KERNEL      STATE    DONE/TOTAL  RATE    ETA",
        "7   tiles  mandelbrot  running  12/48       1.50/s  0:24",
        "8   m      matmul      done     12/48       1.50/s  -",
    ]
    assert cli.format_jobs([]) == "no jobs"


def test_write_results(tmp_path: Path) -> None:
    results = {3: {"c": np.eye(2, dtype=np.float32)}, 0: {"c": np.zeros(1), "d": np.ones(2)}}
    assert cli.write_results(results, tmp_path / "out") == (2, 3)
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["0_c.npy", "0_d.npy", "3_c.npy"]
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "3_c.npy"), np.eye(2))


def _serve_args(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(["serve", *argv])


def test_serve_settings(tmp_path: Path) -> None:
    settings = cli.settings_from_args(_serve_args("--data", str(tmp_path), "--port", "9000"), {})
    assert settings.db == f"sqlite:///{tmp_path / 'tabgrid.db'}"
    assert (settings.data_dir, settings.port, settings.distinct_addresses) == (tmp_path, 9000, True)
    pg = "postgresql://u@db/tg"
    settings = cli.settings_from_args(_serve_args("--db", pg, "--allow-same-address"), {})
    assert (settings.db, settings.distinct_addresses) == (pg, False)


def test_serve_settings_for_several_coordinators(monkeypatch: pytest.MonkeyPatch) -> None:
    from tabgrid.app import proxy_options

    pg = "postgresql://u@db/tg"
    args = _serve_args("--db", pg, "--blobs", "db", "--trust-proxy", "10.0.0.10, 10.1.0.0/16")
    settings = cli.settings_from_args(args, {})
    assert settings.blobs == "db" and settings.trust_proxy == ("10.0.0.10", "10.1.0.0/16")
    assert proxy_options(settings) == {
        "proxy_headers": True,
        "forwarded_allow_ips": "10.0.0.10,10.1.0.0/16",
    }
    # Without a trusted proxy no header is believed, not even from 127.0.0.1.
    assert proxy_options(cli.settings_from_args(_serve_args("--db", pg), {})) == {
        "proxy_headers": False
    }
    slow = cli.settings_from_args(_serve_args("--db", pg, "--sweep-interval", "30"), {})
    assert (slow.sweep_interval_s, slow.coordinator_ttl_s) == (30, 300), "ten sweeps to be gone"
    monkeypatch.setenv("TABGRID_BLOBS", "db")
    monkeypatch.setenv("TABGRID_TRUST_PROXY", "::1")
    from_env = cli.settings_from_args(_serve_args("--db", pg), {})
    assert (from_env.blobs, from_env.trust_proxy) == ("db", ("::1",))


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--trust-proxy", "nginx.local"], "not an IP address or network"),
        (["--blobs", "db"], "PostgreSQL"),
        (["--sweep-interval", "0"], "sweep interval"),
    ],
)
def test_serve_settings_that_cannot_work_are_refused(
    tmp_path: Path, argv: list[str], says: str
) -> None:
    with pytest.raises(cli.CliError, match=says):
        cli.settings_from_args(_serve_args("--data", str(tmp_path), *argv), {})


def test_token_commands_use_the_database(tmp_path: Path, capsys) -> None:
    data = ["--data", str(tmp_path)]
    assert cli.main(["token", "create", "--role", "operator", "--name", "lab", *data]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("tg_") and len(token) > 30
    assert cli.main(["token", "list", *data]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].split() == ["ID", "ROLE", "NAME", "CREATED", "REVOKED", "EXPIRES"]
    assert rows[1].split()[:3] == ["1", "operator", "lab"]
    assert token not in "\n".join(rows)


def test_demo_hint_only_when_every_remaining_tile_waits() -> None:
    job = demo.DemoJob("mandelbrot", 7, "")
    url = "http://127.0.0.1:8000"
    hint = demo.waiting_hint(job, _status(), url)
    assert hint is not None
    assert hint.startswith(
        "36 tiles of job 7 (mandelbrot) wait for a second result from a different worker "
        "(quorum 2): start another worker with: "
    )
    assert hint.endswith(f" worker --url {url}")
    one = demo.waiting_hint(job, _status(counts=UnitCounts(done=47, validating=1)), url)
    assert one is not None and one.startswith("1 tile of job 7 (mandelbrot) waits for")
    busy = _status(counts=UnitCounts(done=12, validating=30, running=6))
    assert demo.waiting_hint(job, busy, url) is None
    assert demo.waiting_hint(job, _status(counts=UnitCounts(done=48)), url) is None


def test_demo_png_is_a_valid_greyscale_image() -> None:
    iters = np.array([[0, 10, 256], [1, 255, 256]], dtype=np.uint32)
    grey = demo.shade(iters, 256)
    assert grey.dtype == np.uint8
    assert grey[0, 0] == 0 and grey[0, 2] == 0 and grey[1, 2] == 0  # in the set: black
    assert 0 < grey[1, 0] < grey[0, 1] < grey[1, 1] <= 255
    png = encode_png(grey)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", png[8:16])
    assert (kind, struct.unpack(">II", png[16:24])) == (b"IHDR", (3, 2))
    idat = png.index(b"IDAT")
    (size,) = struct.unpack(">I", png[idat - 4 : idat])
    rows = zlib.decompress(png[idat + 4 : idat + 4 + size])
    assert rows == b"\x00" + grey[0].tobytes() + b"\x00" + grey[1].tobytes()


def test_demo_token_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "demo-token"
    path.write_text("old", encoding="utf-8")
    path.chmod(0o644)
    demo.write_secret(path, "tg_secret")
    assert path.read_text(encoding="utf-8") == "tg_secret\n"
    assert path.stat().st_mode & 0o777 == 0o600


def test_demo_refuses_a_busy_port() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert not demo.port_free("127.0.0.1", port)
    assert demo.port_free("127.0.0.1", port)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_dev_finds_python_312_or_newer() -> None:
    found = subprocess.run(
        ["bash", str(ROOT / "dev"), "--print-python"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    assert os.access(found, os.X_OK)
    version = subprocess.run(
        [found, "-c", "import sys; print(*sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    assert tuple(map(int, version)) >= (3, 12)


def test_dev_without_a_python_says_what_to_install(tmp_path: Path) -> None:
    # Only bash's own tools on PATH, an empty pyenv root, no python anywhere it looks.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("find", "sort", "dirname", "id"):
        target = subprocess.run(
            ["bash", "-c", f"command -v {tool}"], capture_output=True, text=True
        )
        (bin_dir / tool).symlink_to(target.stdout.strip())
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path), "PYENV_ROOT": str(tmp_path / "pyenv")}
    done = subprocess.run(
        ["/bin/bash", str(ROOT / "dev"), "--print-python"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    if Path("/usr/bin/python3.12").exists() or Path("/usr/bin/python3.13").exists():
        pytest.skip("this machine has a system Python >= 3.12, which ./dev rightly finds")
    assert done.returncode == 1
    assert "no Python >= 3.12" in done.stderr
    assert "python3.12-venv" in done.stderr


@pytest.mark.integration
def test_demo_runs_a_job_to_the_end_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port = _closed_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "server"), "XDG_RUNTIME_DIR": str(tmp_path)}
    command = [sys.executable, "-m", "tabgrid.cli", "demo", "--port", str(port)]
    proc = subprocess.Popen(
        [*command, "--data", str(tmp_path / "demo"), "--workers", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines = []
    try:
        deadline = time.monotonic() + 240
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "(matmul) done: C = A @ B" in line or time.monotonic() > deadline:
                break
        assert any("largest difference to numpy" in line for line in lines), "".join(lines)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, "".join(lines) + rest
    output = "".join(lines)
    assert f"contribute      http://127.0.0.1:{port}/" in output
    assert "one machine, one address" in output
    assert f"console         http://127.0.0.1:{port}/console" in output
    for name in ("demo-token", "operator-token"):
        assert (tmp_path / "demo" / name).stat().st_mode & 0o777 == 0o600
    # The coordinator was stopped with the demo: the port is free again.
    assert demo.port_free("127.0.0.1", port)
