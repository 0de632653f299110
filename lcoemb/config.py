"""Command-line options from settings dataclasses: one source for each setting's default and help.

A settings dataclass (:class:`lcoemb.training.config.TrainConfig`,
:class:`lcoemb.serving.ServeConfig`) documents each field in its metadata::

    batch_size: int = field(default=1056, metadata={"help": "global batch over all processes"})

and :func:`add_config_arguments` turns every field into a flag: ``batch_size`` becomes
``--batch-size``, its help is the metadata's ``help`` followed by the field's default, and its
type comes from the annotation. No default is put into the parsed namespace: a flag left out is
absent, so :func:`given_settings` returns only what the command line set, and the dataclass
(or a settings file read before it) supplies the rest.

Metadata keys besides ``help``:

- ``flag``: the option's name where it is not the field's (``"--cors-origin"`` for
  ``cors_origins``);
- ``default_text``: what the help shows as the default where the field's value would mislead
  (a ``None`` that the command decides at run time).

Annotations map to options as follows: ``int``, ``float``, ``str`` (and ``X | None``) take one
value of that type; ``Literal[...]`` takes one of its values; ``Path`` takes a path (an empty
one is ``None`` for ``Path | None``); ``list[X]`` takes one or more values; ``tuple[X, ...]``
is a repeatable flag; ``bool`` is a switch: ``--name`` (and ``--no-name`` when the default is
on, or when a settings file may have turned it on).
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

__all__ = ["add_config_arguments", "flag_name", "given_settings"]


def flag_name(field: dataclasses.Field) -> str:
    """The command-line option of a settings field: its metadata's ``flag``, else
    ``--field-name``."""
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _default_text(field: dataclasses.Field) -> str | None:
    """How the help shows the field's default (``None``: the field has none)."""
    if "default_text" in field.metadata:
        return field.metadata["default_text"]
    value = _default(field)
    if value is dataclasses.MISSING:
        return None
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None or (isinstance(value, (list, tuple)) and not value):
        return "none"
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    return str(value)


def _path_or_none(text: str) -> Path | None:
    """An optional path option: an empty value (``--index ""``) means none."""
    return Path(text) if text else None


def _option(field: dataclasses.Field, annotation: Any, negatable: bool) -> dict[str, Any]:
    """``add_argument`` keywords for one field, from its annotation."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    optional = len(args) < len(typing.get_args(annotation))
    kind = args[0] if optional and len(args) == 1 else annotation
    origin = typing.get_origin(kind)
    if kind is bool:
        on = _default(field) is True
        return {"action": argparse.BooleanOptionalAction if on or negatable else "store_true"}
    if origin is list:
        return {"nargs": "+", "type": typing.get_args(kind)[0]}
    if origin is tuple:
        return {"action": "append", "type": typing.get_args(kind)[0]}
    if origin is Literal:
        choices = typing.get_args(kind)
        return {"type": type(choices[0]), "choices": choices}
    if kind is Path:
        return {"type": _path_or_none if optional else Path}
    if kind in (int, float, str):
        return {"type": kind}
    raise TypeError(f"{field.name}: no command-line form for {annotation!r}")


def add_config_arguments(
    parser: argparse.ArgumentParser,
    config: type,
    *,
    skip: Iterable[str] = (),
    from_file: bool = False,
) -> None:
    """Add one option per field of the settings dataclass ``config`` to ``parser`` (fields in
    ``skip`` excepted), with the help and the default from the field (see the module
    docstring). ``from_file``: another source (a settings file) may set the fields too, so every
    switch gets its ``--no-`` form to turn off what that source turned on."""
    hints = typing.get_type_hints(config)
    skipped = set(skip)
    for field in dataclasses.fields(config):
        if field.name in skipped:
            continue
        flag = flag_name(field)
        help_text = field.metadata.get("help")
        shown = _default_text(field)
        if shown is not None:
            help_text = f"{help_text} (default: {shown})" if help_text else f"default: {shown}"
        option = _option(field, hints[field.name], from_file)
        if "type" in option and "choices" not in option:  # argparse shows choices as {a,b}
            option["metavar"] = flag[2:].upper().replace("-", "_")
        parser.add_argument(
            flag,
            dest=field.name,
            default=argparse.SUPPRESS,
            help=help_text.replace("%", "%%") if help_text else None,
            **option,
        )


def given_settings(config: type, args: argparse.Namespace) -> dict[str, Any]:
    """The fields of the settings dataclass ``config`` that ``args`` holds (those given on the
    command line, with those that a parser adds with defaults of its own), ready for
    ``config(**settings)``: a repeated flag's values become the tuple the field holds."""
    hints = typing.get_type_hints(config)
    values = vars(args)
    settings = {}
    for field in dataclasses.fields(config):
        if field.name in values:
            value = values[field.name]
            if typing.get_origin(hints[field.name]) is tuple and isinstance(value, list):
                value = tuple(value)
            settings[field.name] = value
    return settings
