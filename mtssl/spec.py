"""The command-line spec grammar.

* task:   ``NAME[:STRATEGY[+STRATEGY]][:key=value[,key=value]]``
* bridge: ``NAME[:SRC->DST][:key=value]``
* source: ``NAME[:PATH][:key=value]``

A ``key=value`` segment belongs to the component just before it
(``cls:fixmatch:threshold=0.95`` sets the strategy's threshold,
``seg:alpha=2:kl`` the task's alpha). After ``a+b``, qualify the key:
``cls:fixmatch+mixmatch:fixmatch.threshold=0.9``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class SpecError(ValueError):
    """A spec string that does not parse."""


def parse_value(text: str) -> Any:
    """``'3'`` -> 3, ``'0.5'`` -> 0.5, ``'true'`` -> True, anything else stays a string."""
    lowered = text.lower()
    if lowered in {"true", "yes", "on"}:
        return True
    if lowered in {"false", "no", "off"}:
        return False
    if lowered in {"none", "null"}:
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


@dataclass
class ComponentSpec:
    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.name}:{opts}" if opts else self.name


@dataclass
class TaskSpec:
    task: ComponentSpec
    strategies: list[ComponentSpec] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.task.name

    def __str__(self) -> str:
        parts = [str(self.task)] + ["+".join(str(s) for s in self.strategies)] if self.strategies else [str(self.task)]
        return ":".join(p for p in parts if p)


@dataclass
class BridgeSpec:
    bridge: ComponentSpec
    source: str | None = None
    target: str | None = None

    @property
    def name(self) -> str:
        return self.bridge.name


@dataclass
class SourceSpec:
    name: str
    path: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


def _parse_options(segment: str, owners: list[ComponentSpec], spec: str) -> None:
    for pair in filter(None, segment.split(",")):
        if "=" not in pair:
            raise SpecError(f"in '{spec}': expected key=value, got '{pair}'")
        key, value = (part.strip() for part in pair.split("=", 1))
        target = owners[-1] if owners else None
        if "." in key:
            owner_name, key = key.split(".", 1)
            matches = [o for o in owners if o.name == owner_name]
            if not matches:
                raise SpecError(f"in '{spec}': '{owner_name}.{key}' names no component of this spec")
            target = matches[0]
        elif len(owners) > 1:
            raise SpecError(
                f"in '{spec}': option '{key}' follows several strategies; write it as "
                f"{owners[0].name}.{key}=..."
            )
        if target is None or not key:
            raise SpecError(f"in '{spec}': option '{pair}' has no component to belong to")
        if key in target.options:
            raise SpecError(f"in '{spec}': option '{key}' of '{target.name}' is given twice")
        target.options[key] = parse_value(value)


def parse_task(spec: str) -> TaskSpec:
    segments = [s.strip() for s in spec.split(":")]
    if not segments[0] or "=" in segments[0]:
        raise SpecError(f"task spec '{spec}' must start with a task name, e.g. 'cls:fixmatch'")
    result = TaskSpec(ComponentSpec(segments[0]))
    owners: list[ComponentSpec] = [result.task]
    for segment in segments[1:]:
        if not segment:
            raise SpecError(f"task spec '{spec}' has an empty segment")
        if "=" in segment:
            _parse_options(segment, owners, spec)
        else:
            owners = [ComponentSpec(n.strip()) for n in segment.split("+")]
            if any(not o.name for o in owners):
                raise SpecError(f"task spec '{spec}' has an empty strategy name")
            seen = [s.name for s in result.strategies]
            for owner in owners:
                if owner.name in seen:
                    raise SpecError(f"task spec '{spec}' lists strategy '{owner.name}' twice")
                seen.append(owner.name)
            result.strategies.extend(owners)
    return result


def parse_bridge(spec: str) -> BridgeSpec:
    segments = [s.strip() for s in spec.split(":")]
    if not segments[0] or "=" in segments[0]:
        raise SpecError(f"bridge spec '{spec}' must start with a bridge name, e.g. 'saliency'")
    result = BridgeSpec(ComponentSpec(segments[0]))
    for segment in segments[1:]:
        if "->" in segment:
            source, target = (p.strip() for p in segment.split("->", 1))
            if not source or not target:
                raise SpecError(f"bridge spec '{spec}': route must look like SRC->DST")
            result.source, result.target = source, target
        elif "=" in segment:
            _parse_options(segment, [result.bridge], spec)
        else:
            raise SpecError(f"bridge spec '{spec}': cannot read '{segment}' (expected SRC->DST or key=value)")
    return result


def parse_source(spec: str) -> SourceSpec:
    """``kermany:/data/chest_xray:skip_bad=true`` -> name, path, options.

    Segments after the name that contain '=' are options; the rest, joined
    back with ':', is the path (so options never need quoting).
    """
    name, _, rest = spec.partition(":")
    name = name.strip()
    if not name:
        raise SpecError(f"data spec '{spec}' must start with a source name, e.g. 'synthetic' or 'kermany:PATH'")
    result = SourceSpec(name)
    path_parts = []
    for segment in rest.split(":") if rest else []:
        if "=" in segment and "/" not in segment.split("=", 1)[0]:
            holder = ComponentSpec(name, result.options)
            _parse_options(segment, [holder], spec)
        else:
            path_parts.append(segment)
    result.path = ":".join(path_parts) or None
    return result
