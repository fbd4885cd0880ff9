"""A small reader of the C definitions in p2pkp.c / p2pkp.h that the Python side mirrors:
#defines with integer values, enums, `static const char * const NAME[] = {...}` string arrays,
packed structs (their field sizes) and designated-initializer arrays of sizeof(struct ...).

Generic on purpose: it reads whatever the C source defines, so the wire-format check keeps
working when the C changes (new types, fields, counters) and fails only on a mismatch.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field

TYPE_SIZES = {
    "u8": 1, "__u8": 1, "s8": 1, "char": 1,
    "u16": 2, "__u16": 2, "__be16": 2, "__le16": 2, "s16": 2, "__s16": 2,
    "u32": 4, "__u32": 4, "__be32": 4, "__le32": 4, "s32": 4, "__s32": 4, "int": 4,
    "u64": 8, "__u64": 8, "__be64": 8, "__le64": 8, "s64": 8, "__s64": 8,
}  # fmt: skip


@dataclass
class CDefs:
    defines: dict[str, int] = field(default_factory=dict)
    enums: dict[str, int] = field(default_factory=dict)
    strings: dict[str, list[str]] = field(default_factory=dict)
    structs: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # name: (field, size)
    arrays: dict[str, dict[str, int]] = field(default_factory=dict)  # name: {index: value}

    def value(self, expr: str) -> int:
        """An integer C expression of literals, known names, BIT(), sizeof(struct X)."""
        e = " ".join(re.sub(r"/\*.*?\*/", "", expr, flags=re.DOTALL).split())
        e = re.sub(r"sizeof\s*\(\s*struct\s+(\w+)\s*\)", lambda m: str(self.sizeof(m[1])), e)
        e = re.sub(r"\bBIT(?:_ULL)?\s*\(", "(1 << ", e)
        e = re.sub(r"\b(0x[0-9a-fA-F]+|\d+)[uUlL]+\b", r"\1", e)

        def name(m: re.Match[str]) -> str:
            n = m[0]
            if n in self.defines:
                return str(self.defines[n])
            if n in self.enums:
                return str(self.enums[n])
            raise KeyError(n)

        e = re.sub(r"\b[A-Za-z_]\w*\b", name, e)
        if not re.fullmatch(r"[\d\sx a-fA-F()+\-*/<>|&]+", e):
            raise KeyError(expr)
        return int(eval(e, {"__builtins__": {}}))  # digits and operators only (checked)

    def sizeof(self, struct: str) -> int:
        return sum(size for _, size in self.structs[struct])


def parse(text: str) -> CDefs:
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"\\\n", " ", text)  # a #define continued on the next line
    d = CDefs()
    pending = re.findall(r"^#define\s+(\w+)\s+(.+?)\s*$", text, re.MULTILINE)

    def defines() -> None:
        """Evaluate what can be now (a #define may use an enum or a struct's size, defined
        later); not an integer (a string, a macro with arguments...) stays pending."""
        for name, expr in list(pending):
            with contextlib.suppress(KeyError, SyntaxError, ValueError):
                d.defines[name] = d.value(expr)
                pending.remove((name, expr))

    defines()
    for m in re.finditer(r"\benum\s*\w*\s*\{(.*?)\}", text, re.DOTALL):
        nxt = 0
        for item in re.sub(r"/\*.*?\*/", "", m[1], flags=re.DOTALL).split(","):
            item = item.strip()
            if not item:
                continue
            name, _, val = item.partition("=")
            nxt = d.value(val) if val.strip() else nxt
            d.enums[name.strip()] = nxt
            nxt += 1
    defines()
    for m in re.finditer(
        r"\bstruct\s+(\w+)\s*\{([^{}]*)\}\s*(?:__packed|__attribute__\(\(packed\)\))", text
    ):
        fields = []
        for f in re.finditer(
            r"^\s*(?:const\s+)?(\w+)\s+(\w+)\s*(?:\[([^\]]+)\])?\s*;",
            re.sub(r"/\*.*?\*/", "", m[2], flags=re.DOTALL),
            re.MULTILINE,
        ):
            count = d.value(f[3]) if f[3] else 1
            fields.append((f[2], TYPE_SIZES[f[1]] * count))
        d.structs[m[1]] = fields
    defines()
    for m in re.finditer(
        r"static\s+const\s+char\s*\*\s*const\s+(\w+)\s*\[[^\]]*\]\s*=\s*\{(.*?)\};", text, re.DOTALL
    ):
        d.strings[m[1]] = re.findall(r'"([^"]*)"', m[2])
    for m in re.finditer(
        r"static\s+const\s+\w+\s+(\w+)\s*\[[^\]]*\]\s*=\s*\{(.*?)\};", text, re.DOTALL
    ):
        items = re.findall(r"\[\s*(\w+)\s*\]\s*=\s*([^,]+)", m[2])
        if items:
            d.arrays[m[1]] = {k: d.value(v) for k, v in items}
    return d
