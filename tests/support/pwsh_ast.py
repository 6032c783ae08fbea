"""Read PowerShell scripts with tree-sitter-pwsh: parse errors, commands called, the param()
block, function definitions. Used by the payload tests (no PowerShell needed)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import tree_sitter_pwsh
from tree_sitter import Language, Node, Parser, Tree

PARSER = Parser(Language(tree_sitter_pwsh.language()))


def parse(source: bytes) -> Tree:
    return PARSER.parse(source)


def walk(node: Node) -> Iterator[Node]:
    yield node
    for child in node.children:
        yield from walk(child)


def text(node: Node) -> str:
    return node.text.decode("utf-8")


def problems(tree: Tree) -> list[str]:
    """ERROR and MISSING nodes, with their line numbers."""
    return [f"{'MISSING' if n.is_missing else 'ERROR'} at line {n.start_point[0] + 1}: {text(n)[:60]!r}"
            for n in walk(tree.root_node) if n.type == "ERROR" or n.is_missing]


def commands(tree: Tree) -> list[str]:
    """Every command name called by name (not `& $variable`)."""
    return [text(n) for n in walk(tree.root_node) if n.type == "command_name"]


def calls(tree: Tree, name: str) -> list[Node]:
    """Every `command` node that calls ``name`` (case-insensitive, as PowerShell resolves it)."""
    return [n for n in walk(tree.root_node) if n.type == "command"
            and any(c.type == "command_name" and text(c).lower() == name.lower() for c in n.children)]


def is_whole_assignment_value(command: Node) -> bool:
    """Is this command alone on the right of `$x = ...` (not piped on, not inside @() or ())?"""
    chain = command.parent
    if chain is None or chain.type != "pipeline_chain" or chain.parent is None:
        return False
    return chain.parent.type == "assignment_value" and [c.type for c in chain.children] == ["command"]


def functions(tree: Tree) -> dict[str, str]:
    """Function name -> its full source text."""
    out = {}
    for n in walk(tree.root_node):
        if n.type == "function_statement":
            name = next(c for c in n.children if c.type == "function_name")
            out[text(name)] = text(n)
    return out


def _literal(node: Node) -> object:
    raw = text(node).strip()
    if raw.startswith("'") and raw.endswith("'"):
        return raw[1:-1].replace("''", "'")
    if raw.startswith('"') and raw.endswith('"'):
        return raw[1:-1]
    if raw.lstrip("-").isdigit():
        return int(raw)
    return raw


@dataclass
class ScriptParam:
    name: str
    type: str | None = None
    mandatory: bool = False
    default: object = None
    validate_set: list[object] | None = None
    validate_pattern: str | None = None
    validate_range: tuple[int, int] | None = None
    attributes: list[str] = field(default_factory=list)


def param_block(tree: Tree) -> list[ScriptParam]:
    """The script's own param() block (the one directly under the program node)."""
    block = next((c for c in tree.root_node.children if c.type == "param_block"), None)
    if block is None:
        return []
    params = []
    for sp in (n for n in walk(block) if n.type == "script_parameter"):
        param = ScriptParam(name=text(next(c for c in sp.children if c.type == "variable")).lstrip("$"))
        for attr in (n for n in walk(sp) if n.type == "attribute"):
            literal = next((c for c in attr.children if c.type == "type_literal"), None)
            if literal is not None:
                param.type = text(literal).strip()[1:-1].lower()  # [string[]] -> string[]
                continue
            name = text(next(c for c in attr.children if c.type == "attribute_name"))
            param.attributes.append(name)
            args_node = next((c for c in attr.children if c.type == "attribute_arguments"), None)
            values: list[object] = []
            if args_node is not None:
                for arg in (c for c in args_node.children if c.type == "attribute_argument"):
                    if any(c.type == "simple_name" for c in arg.children):
                        key = text(next(c for c in arg.children if c.type == "simple_name"))
                        value = text(arg.children[-1])
                        if name == "Parameter" and key == "Mandatory":
                            param.mandatory = value.lower() == "$true"
                        continue
                    array = next((c for c in arg.children if c.type == "array_literal_expression"), None)
                    items = [c for c in (array.children if array else arg.children) if c.type == "unary_expression"]
                    values.extend(_literal(c) for c in items)
            if name == "ValidateSet":
                param.validate_set = values
            elif name == "ValidatePattern":
                param.validate_pattern = str(values[0])
            elif name == "ValidateRange":
                param.validate_range = (int(values[0]), int(values[1]))
        default = next((c for c in sp.children if c.type == "script_parameter_default"), None)
        if default is not None:
            param.default = _literal(default.children[-1])
        params.append(param)
    return params
