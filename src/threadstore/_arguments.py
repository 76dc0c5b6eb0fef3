"""Tool-argument errors a model can act on: which argument, what is accepted, the closest valid
name for a misspelling, and that nothing was changed.

The MCP SDK would report a raw pydantic dump ("2 validation errors for …Arguments … see
https://errors.pydantic.dev/…"); ``argument_errors`` turns the same ``ValidationError`` into
threadstore's own style. Pure functions over the tool's input model and its JSON schema.
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ValidationError

_TYPES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "object": "a JSON object",
    "array": "a list",
    "null": "null",
}


def accepted(schema: dict[str, Any]) -> str:
    """What a JSON-schema property accepts, in words: "an integer from 1 to 500"."""
    if "enum" in schema:
        return " or ".join(repr(v) for v in schema["enum"])
    if "const" in schema:
        return repr(schema["const"])
    options = schema.get("anyOf")
    if options:
        words = [accepted(o) for o in options if o.get("type") != "null"]
        nullable = any(o.get("type") == "null" for o in options)
        return " or ".join(words + (["null (to leave it out)"] if nullable else []))
    kind = schema.get("type")
    text = _TYPES.get(kind, "a value") if isinstance(kind, str) else "a value"
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and high is not None:
        text += f" from {low} to {high}"
    elif low is not None:
        text += f" of at least {low}"
    elif high is not None:
        text += f" of at most {high}"
    short, long = schema.get("minLength"), schema.get("maxLength")
    if short is not None and long is not None:
        text += f" of {short} to {long} characters"
    elif long is not None:
        text += f" of at most {long} characters"
    elif short:
        text += f" of at least {short} character{'s' if short != 1 else ''}"
    if kind == "array" and isinstance(schema.get("items"), dict):
        text = "a list of " + accepted(schema["items"]).removeprefix("a ").removeprefix("an ")
        text += "s" if not text.endswith("s") else ""
    return text


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def argument_errors(tool: str, model: type[BaseModel], exc: ValidationError) -> str:
    """One message for every argument that failed, ending with "Nothing was changed."."""
    properties: dict[str, Any] = model.model_json_schema().get("properties", {})
    names = list(properties)
    problems: dict[str, str] = {}
    for err in exc.errors():
        loc = err.get("loc") or ()
        name = str(loc[0]) if loc else ""
        if name in problems:
            continue  # a union reports one error per alternative: one line per argument
        kind = err.get("type", "")
        if kind == "extra_forbidden":
            close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems[name] = f"unknown argument {name!r}{hint}"
        elif name not in properties:
            problems[name] = "the arguments must be a JSON object of named arguments"
        elif kind == "missing":
            problems[name] = f"{name} is required: {accepted(properties[name])}"
        else:
            where = "".join(f"[{p!r}]" for p in loc[1:])
            got = f"{name}{where} is" if where else "got"
            problems[name] = (
                f"{name} must be {accepted(properties[name])}; {got} {_shown(err.get('input'))}"
            )
    listed = ", ".join(names) if names else "no arguments"
    return (
        f"invalid arguments for {tool}: {'; '.join(problems.values())}."
        f" {tool} accepts: {listed}. Nothing was changed."
    )
