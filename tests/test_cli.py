"""The `lcoemb encode` command: output file, rows in order, and errors that name the line."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from lcoemb.cli import main


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_encode_writes_vectors_in_input_order(omni_path, omni_encoder, media, tmp_path):
    items = _write(
        tmp_path / "items.jsonl",
        [
            {"text": "a red circle"},
            {"audio": str(media["wav16k"])},
            {"video": str(media["mp4"])},
            {"parts": [{"text": "listen:"}, {"audio": str(media["wav16k"])}]},
        ],
    )
    out = tmp_path / "out" / "vecs.npy"
    code = main(
        [
            "encode",
            "--model",
            str(omni_path),
            "--input",
            str(items),
            "--output",
            str(out),
            "--device",
            "cpu",
            "--dtype",
            "bfloat16",  # omni_encoder's, the reference precision
            "--quiet",
            "--batch-size",
            "2",
        ]
    )
    assert code == 0
    vecs = np.load(out)
    assert vecs.shape == (4, omni_encoder.embedding_dim) and vecs.dtype == np.float32
    first = omni_encoder.encode(["a red circle"])[0]
    assert float(vecs[0] @ first) / np.linalg.norm(vecs[0]) / np.linalg.norm(first) > 0.9999


def test_bad_lines_stop_with_line_number_and_write_nothing(omni_path, media, tmp_path, capsys):
    out = tmp_path / "vecs.npy"
    cases = {
        "malformed": ('{"text": "ok"}\n{"text": oops}\n', ":2: invalid JSON"),
        "missing": (
            json.dumps({"text": "ok"}) + "\n" + json.dumps({"audio": "gone.wav"}) + "\n",
            ":2: audio file not found",
        ),
        "empty": ('{"text": "ok"}\n{"text": "ok"}\n{"text": " "}\n', ":3: empty text"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_text(content)
        code = main(
            [
                "encode",
                "--model",
                str(omni_path),
                "--input",
                str(path),
                "--output",
                str(out),
                "--device",
                "cpu",
                "--quiet",
            ]
        )
        err = capsys.readouterr().err
        assert code == 2, name
        assert f"{name}.jsonl{message}" in err, err
        assert not out.exists()
        assert not list(tmp_path.glob("*.tmp"))


def test_console_script_help():
    result = subprocess.run(
        [sys.executable, "-m", "lcoemb.cli", "encode", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert "--adapter" in result.stdout and "line number" in result.stdout


def test_mini_pretrain_task_lists_name_the_tasks(capsys):
    import pytest

    from lcoemb.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(
        ["mini", "pretrain", "--output", "x", "--task-weights", "ocr=1,clip=0", "--train", "read"]
    )
    assert args.task_weights == {"ocr": 1.0, "clip": 0.0} and args.train == ["read"]
    for bad, says in (
        ("poem=1", "scene, ocr, digit, speech, clip"),
        ("ocr", "expected TASK=VALUE"),
        ("ocr=many", "'many' is not a number"),
    ):
        with pytest.raises(SystemExit):
            parser.parse_args(["mini", "pretrain", "--output", "x", "--task-weights", bad])
        assert says in capsys.readouterr().err

    from lcoemb.config import PretrainConfig

    assert PretrainConfig(eval_size=0).eval_size == 0  # 0 skips the report's scores
    with pytest.raises(ValueError, match="eval_size must be >= 0, got -1"):
        PretrainConfig(eval_size=-1)


def test_train_and_serve_options_come_from_their_config_dataclasses(capsys):
    """Every TrainConfig and ServeConfig field is a flag whose help shows the field's default;
    unset flags leave the dataclass defaults, repeated and path flags become the field's type."""
    import dataclasses
    from pathlib import Path

    import pytest

    from lcoemb.cli import build_parser
    from lcoemb.config import TrainConfig, flag_name, given_settings
    from lcoemb.serving import ServeConfig

    parser = build_parser()
    shown = {}
    for command, config in (("train", TrainConfig), ("serve", ServeConfig)):
        with pytest.raises(SystemExit):
            parser.parse_args([command, "--help"])
        shown[command] = " ".join(capsys.readouterr().out.split())
        for field in dataclasses.fields(config):
            assert flag_name(field) in shown[command], (command, field.name)
    assert "over all processes (default: 1056)" in shown["train"]
    assert "--precision {auto,bf16,fp32}" in shown["train"]
    assert "--gradient-checkpointing, --no-gradient-checkpointing" in shown["train"]
    assert "port (default: 8000)" in shown["serve"]

    assert given_settings(TrainConfig, parser.parse_args(["train"])) == {}
    args = parser.parse_args(["train", "--no-gradient-checkpointing", "--matryoshka-dims", "8"])
    assert given_settings(TrainConfig, args) == {
        "gradient_checkpointing": False,
        "matryoshka_dims": [8],
    }

    def serve_config(*flags: str) -> ServeConfig:
        return ServeConfig(**given_settings(ServeConfig, parser.parse_args(["serve", *flags])))

    assert serve_config() == ServeConfig()
    config = serve_config("--cors-origin", "a", "--cors-origin", "b", "--media-root", "m")
    assert config.cors_origins == ("a", "b") and config.media_root == Path("m")
    assert serve_config("--index", "").index is None and serve_config("--port", "9").port == 9


def test_cli_import_and_help_do_not_import_torch():
    """`lcoemb --help` and usage errors must start fast: the parser and its settings import
    neither torch nor numpy; only the commands, after parsing, import the library."""
    code = (
        "import sys\n"
        "import lcoemb.cli\n"
        "try:\n"
        "    lcoemb.cli.main(['train', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in ('torch', 'numpy', 'lcoemb.commands') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_every_subcommand_has_its_command():
    """Each leaf of the parser names (``run``) a function of lcoemb.commands, and each of
    those is reachable."""
    import argparse

    from lcoemb import commands
    from lcoemb.cli import build_parser

    def leaves(parser: argparse.ArgumentParser) -> list[str]:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            return [parser.get_default("run")]
        return [leaf for p in subs[0].choices.values() for leaf in leaves(p)]

    found = leaves(build_parser())
    assert sorted(found) == sorted(commands.COMMANDS)


def test_quickstart_and_pretrain_options_come_from_their_configs():
    """The quickstart's and stage 1's flags keep their names and map onto QuickstartConfig and
    PretrainConfig; stage 1's task names are those of the generated data."""
    from lcoemb.cli import build_parser
    from lcoemb.config import PRETRAIN_TASKS, PretrainConfig, QuickstartConfig, given_settings
    from lcoemb.synthetic import KINDS

    parser = build_parser()
    args = parser.parse_args(
        ["quickstart", "--base", "b", "--steps", "7", "--n-eval", "3", "--output", "o"]
    )
    config = QuickstartConfig(**given_settings(QuickstartConfig, args))
    assert (config.model, config.max_steps, config.n_eval, config.output) == ("b", 7, 3, "o")
    assert (config.warmup_steps, config.save_steps, config.seed) == (1, 7, 0)
    assert given_settings(QuickstartConfig, parser.parse_args(["quickstart"])) == {}

    assert PRETRAIN_TASKS == KINDS
    assert tuple(PretrainConfig().task_weights) == tuple(PretrainConfig().train_size) == KINDS
    args = parser.parse_args(
        ["mini", "pretrain", "--output", "x", "--no-reading", "--train", "image,read"]
    )
    assert given_settings(PretrainConfig, args) == {
        "output": "x",
        "reading": False,
        "train": ["image", "read"],
    }
