"""The one place that writes rendered files.

Renderers return `{relative path: data}`; this module serializes by extension (stable key
order as the renderer built it), adds the generated-file banner where the format has comments,
and replaces each file atomically. It owns its output folder: files it wrote before and no
longer renders are removed, so the folder always equals a fresh render.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import yaml

from vigia.conventions import GENERATED_BANNER

MANIFEST = ".vigia-rendered"


class _Dumper(yaml.SafeDumper):
    """Block style, multi-line strings as literal blocks, no anchors: diff-friendly, byte-stable."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def _str_presenter(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_presenter)
_Dumper.add_representer(tuple, lambda d, v: d.represent_list(list(v)))


def serialize(path: str, data: object, source: str = "stack.yaml") -> bytes:
    banner = GENERATED_BANNER.format(source=source)
    if isinstance(data, bytes):
        return data
    if path.endswith((".yml", ".yaml")):
        body = data if isinstance(data, str) else yaml.dump(
            data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=4096, allow_unicode=True)
        return f"# {banner}\n{body}".encode()
    if path.endswith(".json"):
        return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode()
    if path.endswith(".sql"):
        return f"-- {banner}\n{data}".encode()
    if path.endswith(".xml"):
        return f"<!-- {banner} -->\n{data}".encode()
    if path.endswith(".md"):
        return f"<!-- {banner} -->\n{data}".encode()
    if isinstance(data, str):
        return data.encode()
    raise TypeError(f"don't know how to write {path}")


def write_tree(out_dir: str | Path, files: dict[str, object], source: str = "stack.yaml") -> list[Path]:
    """Write every file, remove the ones a previous render wrote that are gone now."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    previous = _read_manifest(out)
    written = []
    for rel in sorted(files):
        target = out / rel
        atomic_write(target, serialize(rel, files[rel], source))
        written.append(target)
    for stale in sorted(previous - set(files)):
        (out / stale).unlink(missing_ok=True)
    atomic_write(out / MANIFEST, ("\n".join(sorted(files)) + "\n").encode())
    return written


def atomic_write(target: Path, content: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and target.read_bytes() == content:
        return
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_manifest(out: Path) -> set[str]:
    try:
        return set(filter(None, (out / MANIFEST).read_text().splitlines()))
    except FileNotFoundError:
        return set()
