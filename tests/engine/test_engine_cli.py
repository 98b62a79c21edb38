"""`python -m engine ...` in real subprocesses, run from a tmp cwd with DATA_DIR and MODELS_DIR in tmp folders.

Each process imports TensorFlow (seconds), so all of them start at once in one module fixture.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.helpers_engine import FACENET_WEIGHTS, JERRY, MADONNA, fresh_env, sample


@dataclass
class Run:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str


@dataclass
class CliPlace:
    data_dir: Path
    models_dir: Path
    cwd: Path
    env: dict[str, str]


@pytest.fixture(scope="module")
def cli_place(indexed_engine, tmp_path_factory) -> CliPlace:
    """DATA_DIR holding a copy of the sample index, MODELS_DIR with FaceNet only, an empty cwd."""
    root = tmp_path_factory.mktemp("cli")
    place = CliPlace(root / "data", root / "models", root / "cwd", {})
    place.models_dir.mkdir()
    place.cwd.mkdir()
    (place.models_dir / FACENET_WEIGHTS.name).symlink_to(FACENET_WEIGHTS)  # VGG16 stays unavailable
    for graph in [*FACENET_WEIGHTS.parent.glob("*.onnx"), FACENET_WEIGHTS.parent / "onnx.json"]:
        if graph.is_file():  # the ONNX graphs `models fetch` wrote: the default runtime, as for a user
            (place.models_dir / graph.name).symlink_to(graph)
    shutil.copytree(indexed_engine.settings.index_dir("facenet"), place.data_dir / "index" / "facenet")
    place.env = fresh_env(
        DATA_DIR=str(place.data_dir),
        MODELS_DIR=str(place.models_dir),
        GALLERY_DIR=str(indexed_engine.settings.resolved_gallery()),  # the gallery the copied index was built from
    )
    return place


def make_run_env(env: dict[str, str]) -> dict[str, str]:
    """The environment of `make run` on a fresh machine: no token, no TensorFlow log level chosen."""
    return {k: v for k, v in env.items() if k not in ("BOT_TOKEN", "TF_CPP_MIN_LOG_LEVEL")}


@pytest.fixture(scope="module")
def cli(cli_place) -> dict[str, Run]:
    """Every subprocess invocation of this module (two at a time); name → Run."""
    (cli_place.cwd / "notes.jpg").write_text("just text\n")
    jerry, madonna = str(sample(JERRY)), str(sample(MADONNA))
    commands = {
        "search_json": ["search", jerry, madonna, "--json", "-k", "3"],
        "search_bad": ["search", "notes.jpg", jerry, "-k", "2"],  # relative path: resolved against cwd
        "k_zero": ["search", jerry, "-k", "0"],
        "bad_model": ["search", jerry, "--model", "foo"],
        "unknown_command": ["frobnicate"],
        "missing_gallery": ["index", "--gallery", "/nonexistent/gallery"],
        "models": ["models"],
        "demo": [],  # `python -m bot` without a Telegram token: what `make run` shows a newcomer
    }

    def run(name: str) -> Run:
        args = commands[name]
        module, env = ("engine", cli_place.env) if name != "demo" else ("bot", make_run_env(cli_place.env))
        done = subprocess.run(
            [sys.executable, "-m", module, *args],
            cwd=cli_place.cwd, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        return Run(args, done.returncode, done.stdout, done.stderr)

    with ThreadPoolExecutor(max_workers=2) as pool:  # two at a time: TensorFlow start-up is CPU-bound
        runs = dict(zip(commands, pool.map(run, commands)))
    assert sorted(p.name for p in cli_place.cwd.iterdir()) == ["notes.jpg"]  # nothing written relative to the cwd
    return runs


@pytest.mark.slow
def test_demo_answers_every_sample_person_by_name(cli, cli_place):
    """Each person's first photo with a face finds that person first."""
    run = cli["demo"]
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("BOT_TOKEN is not set: running the engine demo")
    answers = {line.split("→")[0].strip(): line.split("→")[1] for line in run.stdout.splitlines() if "→" in line}
    assert sorted(answers) == ["Ben_Afflek", "Elton_John", "Jerry_Seinfeld", "Madonna", "Mindy_Kaling"]
    for folder, answer in answers.items():
        assert answer.strip().startswith(folder.replace("_", " ") + " ("), (folder, answer)
    assert "Leave-one-out on 118 photos of 5 people" in run.stdout
    assert (cli_place.data_dir / "reports").is_dir()


def test_demo_shows_no_tensorflow_start_up_chatter(cli):
    """On a machine without a GPU the newcomer's first screen holds the device line, not C++ logs about CUDA."""
    stderr = cli["demo"].stderr
    for chatter in ("cuda", "cuInit", "absl", "I0000", "E0000", "W0000", "faiss.loader"):
        assert chatter not in stderr, stderr
    assert "embedding on" in stderr or not stderr.strip(), stderr  # the device line, at most


def test_search_json_lines(cli):
    run = cli["search_json"]
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 2
    results = [json.loads(line) for line in lines]
    for result, relative, person in zip(results, (JERRY, MADONNA), ("Jerry Seinfeld", "Madonna")):
        assert result["image"] == str(sample(relative))
        assert {"image", "faces", "ms"} <= set(result)
        assert set(result["ms"]) == {"detect", "embed", "search"}
        assert all(isinstance(v, (int, float)) and v >= 0 for v in result["ms"].values())
        assert len(result["faces"]) == 1
        face = result["faces"][0]
        assert len(face["box"]) == 4 and all(isinstance(v, int) for v in face["box"])
        assert 0.9 <= face["confidence"] <= 1.0
        assert len(face["matches"]) == 3
        for match in face["matches"]:
            assert {"name", "path", "similarity", "distance"} <= set(match)
            assert Path(match["path"]).is_file()
        assert face["matches"][0]["name"] == person
        assert face["matches"][0]["path"] == str(sample(relative))
        assert face["matches"][0]["similarity"] > 0.97  # itself; only the query is flip-averaged


def test_search_with_a_non_image_exits_2_but_prints_the_good_ones(cli):
    run = cli["search_bad"]
    assert run.returncode == 2
    assert "notes.jpg: not a readable image" in run.stderr
    assert f"{sample(JERRY)}: face 1 at [" in run.stdout
    assert "#1 Jerry Seinfeld" in run.stdout
    assert "#3" not in run.stdout  # -k 2


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("k_zero", "error: k must be a whole number from 1 to 50, not 0"),
        ("bad_model", "error: unknown model 'foo'"),
        ("unknown_command", "invalid choice: 'frobnicate'"),
        ("missing_gallery", "error: gallery folder not found: /nonexistent/gallery"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(cli, name, message):
    run = cli[name]
    assert run.returncode == 2, (run.stdout, run.stderr)
    assert message in run.stderr
    assert run.stdout == ""
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["search", str(sample(JERRY)), "--max-faces", "0"], "error: --max-faces must be at least 1"),
        (["search", str(sample(JERRY)), "-k", "51"], "error: k must be a whole number from 1 to 50, not 51"),
    ],
)
def test_main_in_process_exits_2_with_a_message(cli_place, monkeypatch, capsys, args, message):
    """The same `main()` the subprocesses run, called in-process (a TensorFlow start-up per case saved)."""
    from engine.__main__ import main

    monkeypatch.setenv("DATA_DIR", str(cli_place.data_dir))
    monkeypatch.setenv("MODELS_DIR", str(cli_place.models_dir))
    monkeypatch.chdir(cli_place.cwd)
    assert main(args) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.out == ""
    assert "Traceback" not in captured.err


def test_models_lists_facenet_ready_and_vgg16_unavailable(cli):
    run = cli["models"]
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert lines[0].split() == ["facenet", "ready"]
    assert lines[1].startswith("vgg16    unavailable: VGG16 weights missing")
    assert "python -m engine models fetch vgg16" in lines[1]
