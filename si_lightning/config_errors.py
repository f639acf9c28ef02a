"""Turn what jsonargparse, LightningCLI and the classes raise about a config into a ``ConfigurationError``.

jsonargparse reports a parse error as ``Parser key "a.b": <problem>`` or lists unexpected keys; a
class constructor raises a plain ValueError/TypeError, which jsonargparse buries under a Namespace
dump when the class sits in a union type (``Interpolant | None``). Here the innermost message is dug
out and the full key of the setting is found: the config component being built when the error was
raised (from the traceback), refined to the init argument the message names (``norm_groups=7`` ->
``model.backbone.init_args.norm_groups``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from si_lightning.errors import ConfigurationError, one_line

_PARSER_KEY = re.compile(r'(?:Parser key|Key) "(?P<key>[^"]+)"[:\s]*(?P<rest>.*)', re.DOTALL)
_UNRECOGNIZED = re.compile(r"Unrecognized arguments:\s*(?P<rest>.*)", re.DOTALL | re.IGNORECASE)
_INVALID_CHOICE = re.compile(
    r"argument (?P<key>\w+): invalid choice: '(?P<value>[^']*)' \(choose from (?P<choices>.*)\)"
)
_GOT_VALUE = re.compile(r"\.?\s*Got value:\s*(?P<value>.*)$", re.DOTALL)
# Lines of jsonargparse's union reports that never say what is wrong.
_NOISE = (
    "Given value type:",
    "Given value:",
    "Subtypes:",
    "Errors:",
    "Does not validate against any of the",
    "Expected a <class 'NoneType'>",
    "Subclass types expect one of",
    "a class path (str)",
    "a dict with class_path entry",
    "a dict without class_path",
    "a dict with parameters accepted",
    "tip:",
    "usage:",
)
# Lines that say what is wrong only when nothing more specific is there (a union tries every type).
_WEAK = (
    "Not a valid subclass of",
    "does not correspond to a subclass of",
    "Expected a path but",
    "Expected a dot import path string",
    "Problem with given class_path",
    "expects a function or a callable class",
    "Expected a <class 'torch.Tensor'>",
)
_BOOKKEEPING_KEYS = {"class_path", "init_args", "dict_kwargs", "__path__"}
UNKNOWN = object()
SUBCOMMANDS = ("fit", "validate", "test", "predict")


def innermost_message(text: str) -> str:
    """The line of ``text`` that says what is wrong, skipping jsonargparse's union reports and Namespace dumps."""
    strong, weak = [], []
    for raw in str(text).splitlines():
        line = re.sub(r'(?:Parser key|Key) "[^"]+":?\s*$', "", raw.strip().lstrip("-").strip()).strip()
        line = re.sub(r":\s*(?:Parser key|Key) \"[^\"]+\":?$", "", line).strip()
        if not line or any(noise in line for noise in _NOISE):
            continue
        (weak if any(marker in line for marker in _WEAK) else strong).append(line)
    chosen = strong or weak
    return chosen[0] if chosen else one_line(text)


def from_parse_error(message: str, arguments: list[str] | tuple[str, ...] = ()) -> ConfigurationError:
    """A ConfigurationError from the message of jsonargparse's ArgumentError (parse and validation).

    jsonargparse nests its report by indentation: ``Parser key "trainer.callbacks":``, then for each
    type of a union the problem, possibly ``Problem with given class_path 'X':`` and an inner
    ``Parser key "steps":``. The first branch that names a key is followed to its innermost
    problem; a list's bad item is the first one not yet turned into a Namespace, a dict's bad entry
    the one holding the innermost value. ``arguments`` (the command line) supply a value not shown.
    """
    text = str(message)
    unrecognized = _UNRECOGNIZED.search(text)
    if unrecognized:
        words = unrecognized.group("rest").split()
        while words and not words[0].startswith("-") and len(words) > 1:  # a subcommand name before the option
            words.pop(0)
        key = words[0].lstrip("-") if words else "arguments"
        value = " ".join(words[1:]) if len(words) > 1 else None
        return ConfigurationError(key, value, "not a setting of this command (see --help)")
    choice = re.search(
        r"argument (?P<key>\w+): invalid choice: '(?P<value>[^']*)' \(choose from (?P<choices>.*)\)", text
    )
    if choice:
        choices = choice.group("choices").replace("'", "")
        return ConfigurationError(choice.group("key"), choice.group("value"), f"expected one of: {choices}")
    missing_command = re.search(r'expected "(?P<key>\w+)" to be one of \{(?P<choices>[^}]*)\}', text)
    if missing_command:
        choices = missing_command.group("choices").replace(",", ", ")
        return ConfigurationError(missing_command.group("key"), None, f"a command is needed, one of: {choices}")
    missing_file = re.search(r"File does not exist: '(?P<path>[^']*)'", text)
    if missing_file and _PARSER_KEY.search(text):
        return ConfigurationError(_PARSER_KEY.search(text).group("key"), missing_file.group("path"), "no such file")
    not_accepted = re.search(r"Subcommand '(?P<command>[^']+)' does not accept option '(?P<key>[^']+)'", text)
    if not_accepted:
        command = not_accepted.group("command")
        key = not_accepted.group("key")
        value = _value_on_command_line(key, arguments)
        expected = f"an unknown key: not a setting of `si-lightning {command}` (see --help)"
        return ConfigurationError(key, None if value is UNKNOWN else value, expected)
    required = re.search(r"arguments are required:\s*(?P<keys>.+)", text)
    if required:
        key = required.group("keys").split(",")[0].strip()
        key = key.split(".", 1)[1] if key.split(".", 1)[0] in SUBCOMMANDS and "." in key else key
        return ConfigurationError(key, None, "a required setting is missing")
    found = _PARSER_KEY.search(text)
    if not found:
        value = _value_in(text)
        return ConfigurationError("config", None if value is UNKNOWN else value, innermost_message(text))
    lines = [(len(raw) - len(raw.lstrip()), raw.strip().lstrip("-").strip()) for raw in text.splitlines()]
    lines = [(indent, line) for indent, line in lines if line]
    start = next(index for index, (_, line) in enumerate(lines) if _PARSER_KEY.match(line))
    key = found.group("key")
    outer_given = _given_values(lines[start + 1 :])
    if outer_given and outer_given[0][1].startswith("["):  # a list: the first item still a plain dict is the bad one
        index = _first_raw_item(outer_given[0][1])
        key += f"[{index}]" if index is not None else ""
    class_seen, value, detail, key_indent = False, UNKNOWN, None, lines[start][0]
    for position in range(start + 1, len(lines)):
        indent, line = lines[position]
        if line.startswith("Problem with given class_path"):
            class_seen = True
            if key_indent > lines[start][0]:  # a class inside a dict (samplers: {name: class}): which entry
                around = [
                    (depth, given)
                    for depth, given in _given_values(lines[position + 1 :])
                    if key_indent < depth < indent
                ]
                if len(around) >= 2:
                    entry = _dict_entry_holding(around[0][1], around[-1][1])
                    key += f".{entry}" if entry is not None else ""
            continue
        inner = re.search(r'(?:Parser key|Key) "([^"]+)":?\s*$', line)
        if inner:
            name = inner.group(1)
            class_seen = class_seen or "callable class" in line
            key = name if name.startswith(key + ".") else f"{key}.init_args.{name}" if class_seen else f"{key}.{name}"
            class_seen, key_indent = False, indent
            continue
        option = re.search(r"Option '([^']+)' is not accepted", line)
        if option:
            class_seen = class_seen or "callable class" in line
            key += f".init_args.{option.group(1)}" if class_seen else f".{option.group(1)}"
            name = re.escape(option.group(1))
            given = re.search(rf"'{name}': ([^,}}]+)", text) or re.search(rf"\b{name}=([^,)]+)", text)
            value = _unquote(given.group(1)) if given else UNKNOWN
            detail = line
            break
        if any(noise in line for noise in _NOISE):
            continue
        if any(marker in line for marker in _WEAK):
            if line.startswith("Expected a dot import path string") and value is UNKNOWN:
                value = line.split(":", 1)[1].strip()
            detail = detail or line
            continue
        detail = line
        alternatives = _union_alternatives(lines, position)
        if len(alternatives) > 1:  # a union of types: say every type that would do
            detail = "expected one of: " + ", ".join(alternatives)
        break
    detail = detail or innermost_message(text)
    detail, got = _split_value(detail)
    if value is UNKNOWN and got is not UNKNOWN and not str(got).startswith("Namespace("):
        value = got
    deeper = [(indent, given) for indent, given in _given_values(lines[start + 1 :]) if indent > key_indent]
    if deeper and deeper[-1][1].startswith("{") and "class_path" in deeper[-1][1] and key.endswith(("]", "s")):
        entry = _dict_entry_holding(deeper[0][1], deeper[-1][1])  # a bad class path in samplers: {name: {...}}
        if entry is not None and not key.endswith(f".{entry}"):
            key += f".{entry}"
    if value is UNKNOWN and deeper and not deeper[-1][1].startswith(("[", "{", "Namespace(")):
        value = deeper[-1][1]
    if value is UNKNOWN and outer_given and outer_given[0][1].startswith("{"):
        extra = _extra_keys(outer_given[0][1])
        if extra:  # a key beside class_path and init_args
            key, detail = f"{key}.{extra[0]}", f"not a setting here (only class_path and init_args): {detail}"
            value = None
    if value is UNKNOWN and "class_path" in text:
        class_path = re.findall(r"class_path '([^']+)'", text)
        value = class_path[-1] if class_path else UNKNOWN
    if value is UNKNOWN:
        value = _value_on_command_line(key, arguments)
    return ConfigurationError(key, None if value is UNKNOWN else value, detail)


def _union_alternatives(lines: list[tuple[int, str]], position: int) -> list[str]:
    """The types of the ``Expected a <type>`` lines beside ``position`` (same indent), NoneType left out."""
    indent, alternatives = lines[position][0], []
    for depth, line in lines[position:]:
        if depth != indent or not line.startswith("Expected a "):
            break
        kind = re.sub(r"\.\s*Got value:.*$", "", line[len("Expected a ") :]).strip()
        if "NoneType" not in kind:
            alternatives.append(re.sub(r"^<class '([^']+)'>$", r"\1", kind))
    return alternatives


def _given_values(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """(indent, value) of every ``Given value:`` line, least indented first (the outermost value)."""
    values = [
        (indent, re.sub(r"\.\s*Got value:.*$", "", line.split(":", 1)[1].strip()))
        for indent, line in lines
        if line.startswith("Given value:")
    ]
    return sorted(values, key=lambda item: item[0])


def _dict_entry_holding(outer: str, inner: str) -> str | None:
    """The key of the printed dict ``outer`` whose value is the printed dict ``inner``."""
    if not outer.startswith("{"):
        return None
    for item in _top_level_items(outer):
        name, _, value = item.partition(":")
        if value.strip() == inner:
            return name.strip().strip("'\"")
    return None


def _top_level_items(text: str) -> list[str]:
    """The items of a printed list or dict, split at the commas outside brackets and quotes."""
    items, depth, quote, current = [], 0, "", ""
    for character in text[1:-1]:
        if quote:
            quote = "" if character == quote else quote
        elif character in "'\"":
            quote = character
        elif character in "([{":
            depth += 1
        elif character in ")]}":
            depth -= 1
        elif character == "," and depth == 0:
            items.append(current.strip())
            current = ""
            continue
        current += character
    if current.strip():
        items.append(current.strip())
    return items


def _first_raw_item(text: str) -> int | None:
    for index, item in enumerate(_top_level_items(text)):
        if not item.startswith("Namespace("):
            return index
    return None


def _extra_keys(text: str) -> list[str]:
    """Keys of a printed dict other than class_path/init_args (a setting beside them, at the wrong level)."""
    if not text.startswith("{"):
        return []
    keys = [item.split(":", 1)[0].strip().strip("'\"") for item in _top_level_items(text) if ":" in item]
    return [key for key in keys if key not in _BOOKKEEPING_KEYS]


def _split_value(detail: str) -> tuple[str, Any]:
    got = _GOT_VALUE.search(detail)
    if got:
        return detail[: got.start()].strip() or detail, got.group("value").strip()
    return detail, UNKNOWN


def _value_in(text: str) -> Any:
    got = re.search(r"Got value:\s*(?P<value>[^\n]*)", text) or re.search(r"Given value:\s*(?P<value>[^\n]*)", text)
    if not got:
        return UNKNOWN
    value = re.sub(r"\.\s*Got value:.*$", "", got.group("value").strip())
    return UNKNOWN if value.startswith(("Namespace(", "[", "{")) else value


def _unquote(text: str) -> str:
    text = text.strip()
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"" else text


def _value_on_command_line(key: str, arguments: list[str] | tuple[str, ...]) -> Any:
    """The value given to ``--key`` (``--key value`` or ``--key=value``), else UNKNOWN."""
    name = key.split(".")[-1]
    for index, argument in enumerate(arguments):
        option, _, attached = argument.partition("=")
        if option.startswith("--") and (option[2:] == key or option[2:].endswith("." + name)):
            if attached:
                return attached
            if index + 1 < len(arguments):
                return arguments[index + 1]
    return UNKNOWN


def leaves(config: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every (key, value) in a config of dicts and lists; list items are keyed ``name[index]``."""
    if isinstance(config, dict):
        for name, value in config.items():
            yield from leaves(value, f"{path}.{name}" if path else str(name))
    elif isinstance(config, (list, tuple)) and any(isinstance(item, dict) for item in config):
        for index, item in enumerate(config):
            yield from leaves(item, f"{path}[{index}]")
    else:
        yield path, config


def plain(config: Any) -> Any:
    """A jsonargparse Namespace (or anything holding them) as dicts and lists."""
    if hasattr(config, "as_dict"):
        return plain(config.as_dict())
    if isinstance(config, dict):
        return {str(name): plain(value) for name, value in config.items() if not str(name).startswith("__")}
    if isinstance(config, (list, tuple)):
        return [plain(item) for item in config]
    return config


def component_key(error: BaseException) -> str | None:
    """The config key jsonargparse was instantiating when ``error`` was raised (deepest in the traceback)."""
    key = None
    traceback = error.__traceback__
    while traceback is not None:
        component = traceback.tb_frame.f_locals.get("component")
        dest = getattr(component, "dest", None)
        if isinstance(dest, str) and traceback.tb_frame.f_code.co_filename.endswith(("_instantiation.py", "_core.py")):
            key = dest
        traceback = traceback.tb_next
    return key


def _words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text)


def locate(message: str, config: Any, base: str | None) -> tuple[str, Any]:
    """(key, value) of the setting ``message`` is about, among the leaves of ``config`` under ``base``.

    A leaf is a candidate when its own name is a word of the message; it scores higher when its
    value is quoted in the message (``'heun-typo'``), lower when the value only appears as a word,
    and higher when the class it belongs to is named; the earliest-named leaf wins a tie. With no
    leaf named, the base key itself and its class path (or value) are returned.
    """
    tree = plain(config)
    prefix = base or ""
    entries = [
        (key, value)
        for key, value in leaves(tree)
        if not prefix or key == prefix or key.startswith((prefix + ".", prefix + "["))
    ]
    words = _words(message)
    positions = {word: index for index, word in reversed(list(enumerate(words)))}
    best, best_score = None, (0, 0, 0)
    for key, value in entries:
        name = re.split(r"[.\[\]]", key.rstrip("]"))[-1]
        mentioned = _mentions(message, value)
        quoted = isinstance(value, str) and repr(value) in message
        if name in ("class_path", "init_args") or (name not in positions and not quoted):
            continue  # named in the message, or its value quoted there ("unknown toy 'spiral'")
        owner = _owning_class(tree, key)
        named = 1 if name in positions else 0
        score = (
            named + 2 * mentioned + (1 if owner and owner in words else 0),  # a quoted value weighs most
            -positions.get(name, len(words)),
            -len(key),
        )
        if score > best_score:
            best, best_score = (key, value), score
    if best is not None:
        return best
    if base:
        value = _get(tree, base)
        if isinstance(value, dict) and "class_path" in value:
            return base, value["class_path"]
        return base, value if not isinstance(value, (dict, list)) else None
    return "config", None


def _mentions(message: str, value: Any) -> int:
    """2 when ``value`` is quoted or shown with ``=`` in ``message``, 1 when it is there as a word, else 0."""
    if isinstance(value, list) and value and (str(tuple(value)) in message or str(value) in message):
        return 2
    if value is None or isinstance(value, (dict, list)) or value == "":
        return 0
    text = str(value)
    if repr(text) in message or re.search(rf"(?<![<>=!])= ?{re.escape(text)}(?![\w.])", message):
        return 2
    return 1 if re.search(rf"(?<![\w.-]){re.escape(text)}(?![\w-])", message) else 0


def _owning_class(tree: Any, key: str) -> str | None:
    """The class name of the nearest ``class_path`` above ``key``."""
    parts = key.split(".init_args.")
    if len(parts) < 2:
        return None
    owner = _get(tree, ".init_args.".join(parts[:-1]))
    class_path = owner.get("class_path") if isinstance(owner, dict) else None
    return class_path.rsplit(".", 1)[-1] if isinstance(class_path, str) else None


def _get(tree: Any, key: str) -> Any:
    node = tree
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", key):
        if part.startswith("["):
            index = int(part[1:-1])
            node = node[index] if isinstance(node, list) and index < len(node) else None
        else:
            node = node.get(part) if isinstance(node, dict) else None
    return node


def from_exception(error: BaseException, config: Any, base: str | None = None) -> ConfigurationError:
    """A ConfigurationError for an exception a class raised while the config was built or set up."""
    if isinstance(error, ConfigurationError):
        if error.key in {key for key, _ in leaves(plain(config))}:
            return error
        # a class named only its own argument (``root``): find the full key, keep what it said
        key, _ = locate(error.key, config, base if base is not None else component_key(error))
        return ConfigurationError(key, error.value, error.expected) if key != "config" else error
    message = innermost_message(str(error)) if str(error) else type(error).__name__
    key, value = locate(message, config, base if base is not None else component_key(error))
    return ConfigurationError(key, value, message)
