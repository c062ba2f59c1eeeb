"""Errors that name the file and the field path of bad input."""

from __future__ import annotations


class SpecError(ValueError):
    """Bad input in a YAML file: says which file, which field, and what was wrong."""

    def __init__(self, source: str, path: str, message: str):
        self.source, self.path, self.message = source, path, message
        where = f"{source}: {path}: " if path else f"{source}: "
        super().__init__(where + message)


def format_loc(loc: tuple) -> str:
    """('models', 2, 'quantization') -> 'models[2].quantization'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def from_validation_error(source: str, exc) -> SpecError:
    """The first error of a pydantic ValidationError, as one SpecError naming the field."""
    err = exc.errors()[0]
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    elif err["type"] == "literal_error":
        allowed = err.get("ctx", {}).get("expected", "")
        msg = f"{err['input']!r} is not one of {allowed.replace(' or ', ', ').replace(chr(39), '')}"
    elif err["type"] == "missing":
        msg = "required field is missing"
    return SpecError(source, format_loc(loc), msg)


def unique(source: str, key: str, names) -> None:
    """Raise a SpecError naming the first name that appears twice in SOURCE's KEY list."""
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise SpecError(source, f"{key}[{i}].name", f"{name!r} appears twice")
        seen.add(name)


def load_yaml(path) -> object:
    """Parse a YAML file, turning a parse error into a SpecError with the line."""
    from pathlib import Path

    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(str(path), "", f"cannot read: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(str(path), "", f"malformed YAML: {where}{problem}") from None
