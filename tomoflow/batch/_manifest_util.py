"""Helpers of :mod:`tomoflow.batch.manifest` that know nothing of its models: glob and path tests, reading
and writing the YAML / JSON text, and building pydantic errors with chosen locations."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from tomoflow.errors import ConfigError, InputError
from tomoflow.io.output import as_file_plan, write_file

SUFFIXES = (".yaml", ".yml", ".json")


def is_glob(text: str) -> bool:
    """Whether ``text`` holds a glob wildcard (``*``, ``?`` or ``[``)."""
    return any(c in text for c in "*?[")


def globby(path: Path) -> bool:
    """Whether ``path`` is a glob pattern: wildcards, and no such file (as
    :func:`tomoflow.io.ingest.detect_format` decides: ``scan [1].h5`` that exists is a file)."""
    return is_glob(str(path)) and not path.exists()


def validation_error(title: str, items: list[Any]) -> ValidationError:
    """A ValidationError of ``items``: ``(loc, message, input)`` tuples, or pydantic error dicts (of a
    nested validation, their ``loc`` already extended), sorted by location."""
    details = []
    for item in sorted(items, key=lambda it: _loc_key(it["loc"] if isinstance(it, dict) else it[0])):
        if isinstance(item, dict):
            loc, msg, inp = tuple(item["loc"]), clean_message(item["msg"]), item.get("input")
            detail = InitErrorDetails(type=item["type"], loc=loc, input=inp, ctx=item.get("ctx") or {})
            try:  # keep pydantic's own error type where it has one (the messages depend on it)
                ValidationError.from_exception_data(title, [detail])
            except (KeyError, TypeError):
                detail = InitErrorDetails(
                    type=PydanticCustomError("manifest", "{message}", {"message": msg}), loc=loc, input=inp
                )
        else:
            loc, msg, inp = item
            detail = InitErrorDetails(
                type=PydanticCustomError("manifest", "{message}", {"message": msg}), loc=loc, input=inp
            )
        details.append(detail)
    return ValidationError.from_exception_data(title, details)


def _loc_key(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Sort key of an error location (indices before names)."""
    return tuple((0, p, "") if isinstance(p, int) else (1, 0, str(p)) for p in loc)


def clean_message(msg: str) -> str:
    """A pydantic message without its ``Value error,`` prefix."""
    return str(msg).removeprefix("Value error, ").removeprefix("Assertion failed, ")


def glob_base(p: Path) -> str:
    """The folder part of a glob before its first wildcard (the path itself when it has none)."""
    text = str(p)
    if not globby(p):
        return text
    parts = Path(text).parts
    keep = []
    for part in parts:
        if is_glob(part):
            break
        keep.append(part)
    return str(Path(*keep)) if keep else "."


def real_path(p: Path) -> Path:
    """``p`` absolute, symbolic links resolved, case folded (scan folders are compared ignoring case)."""
    return Path(os.path.normcase(str(Path(p).expanduser().resolve())).lower())


def yaml_loader() -> Any:
    """A YAML safe loader refusing duplicate keys (PyYAML would keep the last one silently)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader: Any, node: Any, deep: bool = False) -> Any:
        keys = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in keys:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            keys.add(key)
        return loader.construct_mapping(node, deep)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return Loader


def read_document(path: Path) -> Any:
    """The parsed YAML or JSON of a manifest file; duplicate keys and syntax errors refused with the
    line, as :class:`ConfigError` naming the file."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ConfigError(f"{path}: a batch manifest is a .yaml, .yml or .json file")
    if not path.is_file():
        raise InputError("no such manifest file" if not path.exists() else "is not a file", path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the manifest ({type(exc).__name__}: {exc})", path) from None
    if suffix == ".json":

        def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
            keys = [k for k, _ in items]
            dup = next((k for k in keys if keys.count(k) > 1), None)
            if dup is not None:
                raise ConfigError(f"{path}: invalid JSON: duplicate key {dup!r}")
            return dict(items)

        try:
            doc = json.loads(text, object_pairs_hook=pairs)
            if isinstance(doc, dict):
                doc.pop("tomoflow_file", None)  # the file policy's stamp, not part of the manifest
            return doc
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    import yaml

    try:
        return yaml.load(text, Loader=yaml_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None


def relative_text(value: Any, base: Path) -> Any:
    """An absolute path string inside ``base`` as a POSIX path relative to it; anything else unchanged."""
    if not isinstance(value, str) or not os.path.isabs(value):
        return value
    try:
        return Path(value).relative_to(base).as_posix()
    except ValueError:
        return value


def write_document(path: Any, doc: dict[str, Any], *, overwrite: bool = False) -> None:
    """Write ``doc`` as YAML (``.yaml`` / ``.yml``; short lists of numbers inline) or JSON through the
    file policy (:func:`tomoflow.io.output.write_file`: stamped, atomic; ``path`` a file or a plan)."""
    plan = as_file_plan(path, kind="manifest", overwrite=overwrite)
    path = plan.path
    if path.suffix.lower() == ".json":
        text = plan.json_text(doc, indent=2)
    else:
        import yaml

        class Dumper(yaml.SafeDumper):
            pass

        def seq(dumper: Any, data: list[Any]) -> Any:
            flow = all(isinstance(v, (int, float, str)) for v in data) and len(data) > 0
            return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)

        Dumper.add_representer(list, seq)
        text = plan.text_document(yaml.dump(doc, Dumper=Dumper, sort_keys=False, allow_unicode=True, width=120))
    write_file(plan, text)
