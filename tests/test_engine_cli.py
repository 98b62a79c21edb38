"""`python -m engine ...` in real subprocesses, run from a tmp cwd with DATA_DIR and MODELS_DIR in tmp folders.

Each process imports TensorFlow (seconds), so all of them start at once in one module fixture.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine import EngineSettings
from helpers_engine import FACENET_WEIGHTS, JERRY, MADONNA, REPO_ROOT, sample


@dataclass
class Run:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def cli(indexed_engine, tmp_path_factory):
    """Every CLI invocation of this module, run concurrently; name → Run."""
    root = tmp_path_factory.mktemp("cli")
    data_dir, models_dir, cwd = root / "data", root / "models", root / "cwd"
    models_dir.mkdir()
    cwd.mkdir()
    (models_dir / FACENET_WEIGHTS.name).symlink_to(FACENET_WEIGHTS)  # FaceNet only: VGG16 stays unavailable
    shutil.copytree(indexed_engine.settings.index_dir("facenet"), data_dir / "index" / "facenet")
    not_an_image = cwd / "notes.jpg"
    not_an_image.write_text("just text\n")

    env = {k: v for k, v in os.environ.items() if k.lower() not in EngineSettings.model_fields}
    env.update(
        DATA_DIR=str(data_dir),
        MODELS_DIR=str(models_dir),
        TF_CPP_MIN_LOG_LEVEL="3",
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
    )
    jerry, madonna = str(sample(JERRY)), str(sample(MADONNA))
    commands = {
        "search_json": ["search", jerry, madonna, "--json", "-k", "3"],
        "search_bad": ["search", "notes.jpg", jerry, "-k", "2"],  # relative path: resolved against cwd
        "unknown_command": ["frobnicate"],
        "models": ["models"],
    }

    def run(name: str) -> Run:
        args = commands[name]
        done = subprocess.run(
            [sys.executable, "-m", "engine", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
        )
        return Run(args, done.returncode, done.stdout, done.stderr)

    with ThreadPoolExecutor(max_workers=2) as pool:  # two at a time: TensorFlow imports are CPU-bound
        runs = dict(zip(commands, pool.map(run, commands)))
    assert not (cwd / "data").exists() and not (cwd / "models").exists()  # nothing relative to the cwd
    runs["env"] = Run([], 0, json.dumps({"DATA_DIR": str(data_dir), "MODELS_DIR": str(models_dir), "cwd": str(cwd)}), "")
    return runs


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
        assert face["matches"][0]["similarity"] > 0.99


def test_search_with_a_non_image_exits_2_but_prints_the_good_ones(cli):
    run = cli["search_bad"]
    assert run.returncode == 2
    assert "notes.jpg: not a readable image" in run.stderr
    assert f"{sample(JERRY)}: face 1 at [" in run.stdout
    assert "#1 Jerry Seinfeld" in run.stdout
    assert "#3" not in run.stdout  # -k 2


def test_unknown_subcommand_exits_2(cli):
    run = cli["unknown_command"]
    assert run.returncode == 2, (run.stdout, run.stderr)
    assert "invalid choice: 'frobnicate'" in run.stderr
    assert run.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["search", str(sample(JERRY)), "-k", "0"], "error: k must be a whole number from 1 to 50, not 0"),
        (["search", str(sample(JERRY)), "--model", "foo"], "error: unknown model 'foo'"),
        (["search", str(sample(JERRY)), "--max-faces", "0"], "error: --max-faces must be at least 1"),
        (["index", "--gallery", "/nonexistent/gallery"], "error: gallery folder not found: /nonexistent/gallery"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(cli, monkeypatch, capsys, args, message):
    """The same `main()` the subprocesses run, called in-process (a TensorFlow start-up per case saved)."""
    from engine.__main__ import main

    paths = json.loads(cli["env"].stdout)
    monkeypatch.setenv("DATA_DIR", paths["DATA_DIR"])
    monkeypatch.setenv("MODELS_DIR", paths["MODELS_DIR"])
    monkeypatch.chdir(paths["cwd"])
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
