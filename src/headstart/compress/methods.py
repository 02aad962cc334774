"""The ``--methods`` list: ``int8``, ``prune:RATIO``, ``distill:BACKBONE``, checked before any
work starts so a typo costs nothing."""

from __future__ import annotations

from dataclasses import dataclass

from headstart.errors import ConfigError

__all__ = ["KINDS", "Method", "parse_methods"]

KINDS = ("int8", "prune", "distill")
_DEFAULT_STUDENT = "mobilenet_v2"


@dataclass(frozen=True)
class Method:
    """One compression to run: its kind and argument (the pruning ratio, the student)."""

    kind: str
    ratio: float | None = None
    student: str | None = None

    @property
    def name(self) -> str:
        """The method as written in compress.json (and its result's folder name)."""
        if self.kind == "prune":
            return f"prune-{self.ratio:g}"
        if self.kind == "distill":
            return f"distill-{self.student}"
        return self.kind


def _ratio(text: str) -> float:
    try:
        ratio = float(text)
    except ValueError:
        raise ConfigError(f"prune ratio '{text}' is not a number; e.g. prune:0.3") from None
    if not 0.0 < ratio < 1.0:
        raise ConfigError(f"prune ratio {text} must be between 0 and 1 (the share of channels cut)")
    return ratio


def _one(item: str) -> Method:
    kind, _, arg = item.partition(":")
    kind = kind.strip().lower()
    arg = arg.strip()
    if kind == "int8":
        if arg:
            raise ConfigError(f"'{item}': int8 takes no argument")
        return Method("int8")
    if kind == "prune":
        return Method("prune", ratio=_ratio(arg or "0.3"))
    if kind == "distill":
        # lazy: the registry is small, but the CLI must not import the library at start-up
        from headstart.backbones import require_single, resolve_backbone

        student = arg or _DEFAULT_STUDENT
        require_single(student, "a distillation student", "name one backbone")
        resolve_backbone(student)  # an unknown name fails here, before any work
        return Method("distill", student=student)
    raise ConfigError(
        f"unknown compression method '{item}'; valid: int8, prune:RATIO, distill:BACKBONE"
    )


def parse_methods(text: str) -> list[Method]:
    """``"int8,prune:0.3,distill:mobilenet_v2"`` -> methods, each checked; repeats refused."""
    items = [part for part in (p.strip() for p in text.split(",")) if part]
    if not items:
        raise ConfigError("no compression method given; e.g. --methods int8,prune:0.3")
    methods = [_one(item) for item in items]
    names = [m.name for m in methods]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"method listed twice: {', '.join(repeated)}")
    return methods
