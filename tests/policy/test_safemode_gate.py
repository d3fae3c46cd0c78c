"""Safe Mode's fast paths give the answers of the full check.

* The plain-text gate (``_plain_gate``): one RE2 pass that lets an ASCII
  string skip the variants and the separate rule passes.  Oracle: the full
  check (``_check_variants``) on the same string, over every corpus and over
  generated strings built from the pieces attacks are made of.
* Glob words are found by one RE2 pass instead of ``str.split()``; oracle:
  ``str.split()``.
* ``_could_select`` narrows the sensitive paths a glob is compiled against;
  oracle: the compiled glob against every path with the same prefix.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentwall.policy import safemode
from agentwall.policy.safemode import (
    METADATA_RULE,
    PRIVATE_RULE,
    TEXT_RULES,
    SafeModeEngine,
)
from agentwall.policy.secrets import SECRET_RULE_IDS

from .test_safemode import BENIGN, BYPASSES, POSITIVE

ENGINES = {
    "all rules": SafeModeEngine(()),
    "no host rules": SafeModeEngine((METADATA_RULE, PRIVATE_RULE)),
    "no text rules": SafeModeEngine(tuple(r.id for r in TEXT_RULES)),
    "no secret rules": SafeModeEngine(SECRET_RULE_IDS),
    "allow_private": SafeModeEngine((), allow_private=("10.0.0.0/8", "*.corp.example")),
}

# tests/adversarial/test_adv_safemode.py runs the red-team corpora the same way.
CORPUS = sorted({*(text for texts in POSITIVE.values() for text in texts), *BYPASSES, *BENIGN})


def _spellings(text: str) -> list[str]:
    """The text as written, in other cases, and inside ordinary prose."""
    return [
        text,
        text.upper(),
        text.title(),
        text.swapcase(),
        f"notes for today: {text} and more",
        f"{text}\n" * 3,
    ]


def _same(text: str) -> None:
    for name, engine in ENGINES.items():
        full = engine._check_variants(text, False)
        assert engine._check(text, False) == full, (name, ascii(text), full)


@pytest.mark.parametrize("text", CORPUS, ids=lambda t: ascii(t)[:40])
def test_the_gate_agrees_with_the_full_check_on_every_corpus(text: str) -> None:
    for spelling in _spellings(text):
        _same(spelling)


def test_the_gate_really_skips_plain_text() -> None:
    # Without this the agreement above would hold for a gate that always
    # says "look closer".
    engine = ENGINES["all rules"]
    for text in ("hello world", "the quick brown fox " * 500, "Report for Q3 2025"):
        assert engine._plain_gate.search(text) is None, text


ATOMS = sorted(
    {
        " ", "\n", "\t", "|", ";", "&", "(", ")", "`", "'", '"', "$", "%", "\\", "/", ".",
        "..", "*", "?", "[", "]", "~", ":", "=", "-", "@", "#", "0", "1", "9",
        "sh", "bash", "curl", "wget", "nc", "rm", "-rf", "dd", "of=/dev/sda", "mkfs",
        "eval", "exec", "sudo", "http", "https", "://", "file", "gopher", "ftp",
        "etc", "shadow", "passwd", "sudoers", ".ssh", "id_rsa", ".aws", "credentials",
        ".env", ".kube", "config", "docker.sock", "proc", "self", "environ", "home",
        "169.254.169.254", "127.0.0.1", "10.0.0.1", "localhost", "metadata.google.internal",
        "0x7f000001", "[::1]", "example.com", "%2e", "%2f", "\\u002e", "${ifs}",
        "akia", "AKIA", "IOSFODNN7EXAMPLE", "ghp_", "x" * 36, "sk-ant-", "A" * 24,
        "-----BEGIN RSA PRIVATE KEY-----", "xoxb-", "AIza", "ya29.",
        "Hello", "World", "ETC", "SHADOW", "CURL", "SH", "HTTP",
    }
)  # fmt: skip


@given(st.lists(st.sampled_from(ATOMS), max_size=14).map("".join))
def test_the_gate_agrees_with_the_full_check_on_generated_strings(text: str) -> None:
    _same(text)
    _same(text.upper())


@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x7F), max_size=60))
def test_the_gate_agrees_with_the_full_check_on_any_ascii(text: str) -> None:
    _same(text)


def _negated_classes(source: str) -> list[str]:
    """The bodies of the ``[^...]`` classes in a pattern, escapes removed."""
    bodies: list[str] = []
    i = 0
    while i < len(source):
        c = source[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":
            j = i + 1
            negated = source[j : j + 1] == "^"
            body: list[str] = []
            j += 1 if negated else 0
            first = True
            while j < len(source) and (source[j] != "]" or first):
                if source[j] == "\\":
                    j += 2
                    first = False
                    continue
                body.append(source[j])
                first = False
                j += 1
            if negated:
                bodies.append("".join(body))
            i = j + 1
            continue
        i += 1
    return bodies


def test_case_insensitive_parts_are_written_for_lowered_text() -> None:
    # The gate reads these case-insensitively on the string as written; that
    # finds every match the pattern has in the lowered string only if their
    # negated classes exclude no upper-case letter.
    sources = [r.source for r in TEXT_RULES if r.source is not None]
    sources += [safemode._URL.pattern, safemode._FETCH_CMD.pattern]
    assert _negated_classes(r"a[^A-Z\]x]b[^\sq]") == ["A-Zx", "q"]
    for source in sources:
        for body in _negated_classes(source):
            assert not re.search("[A-Z]", body), (source, body)


# -- glob words ----------------------------------------------------------------------

SPACES = sorted(safemode._PY_SPACE)


def test_the_glob_word_class_is_pythons_whitespace() -> None:
    assert set(safemode._PY_SPACE) == {chr(c) for c in range(0x3001) if chr(c).isspace()}
    assert all(not chr(c).isspace() for c in range(0x3001, 0x110000, 97))


@given(
    st.lists(
        st.one_of(st.sampled_from(SPACES), st.sampled_from(list("ab/.*?[]~é'\""))), max_size=40
    ).map("".join)
)
def test_glob_words_are_the_split_words_that_hold_a_glob_character(text: str) -> None:
    expected = [w for w in text.split() if "*" in w or "?" in w or "[" in w]
    assert safemode._GLOB_WORD.findall(text) == expected


# -- which sensitive paths a glob can select -----------------------------------------

PATHS = list(safemode._GLOB_SENSITIVE) + list(safemode._GLOB_NEIGHBOURS)


@st.composite
def _globs(draw: st.DrawFn) -> str:
    path = draw(st.sampled_from(PATHS))
    out: list[str] = []
    for ch in path:
        roll = draw(st.integers(0, 9))
        if roll == 0:
            out.append("?")
        elif roll == 1:
            out.append("*")  # in place of the character
        elif roll == 2 and draw(st.booleans()):
            out.append("*" + ch)  # before it: the star matches nothing
        elif roll == 2:
            out.append(f"[{ch}x]")
        elif roll == 3:
            continue  # a deleted character: a glob that may select nothing
        else:
            out.append(ch)
    return "".join(out)


@given(_globs())
def test_narrowing_never_drops_a_path_the_glob_selects(form: str) -> None:
    prefix = form
    for meta in "*?[":
        cut = prefix.find(meta)
        if cut >= 0:
            prefix = prefix[:cut]
    rx = safemode._glob_regex(form)
    if rx is None:
        return
    selected = [c for c in safemode._GLOB_SENSITIVE if c.startswith(prefix) and rx.match(c)]
    narrowed = safemode._could_select(form, prefix)
    assert set(selected) <= set(narrowed), (form, selected, narrowed)


@pytest.mark.parametrize(
    ("form", "path"),
    [
        ("/etc/shadow*", "/etc/shadow"),
        ("*/etc/shadow", "/etc/shadow"),
        ("/etc/s[h]adow", "/etc/shadow"),
        ("/etc/s[!x]ado?", "/etc/shadow"),
        ("~/.ss?/id_*", "~/.ssh/id_rsa"),
        (".e[n]v", ".env"),
    ],
)
def test_narrowing_keeps_the_paths_of_known_targeted_globs(form: str, path: str) -> None:
    prefix = form[: min([form.find(m) for m in "*?[" if m in form] or [len(form)])]
    assert path in safemode._could_select(form, prefix)


def test_code_and_data_with_many_subscripts_are_not_globs() -> None:
    # Over 64 distinct glob-looking words used to exhaust the compile budget,
    # and the string was then denied as reaching /etc/shadow.
    engine = SafeModeEngine(())
    for text in (
        "values = " + " ".join(f"[{i}]" for i in range(200)),
        " ".join(f"def f{i}(*args{i}, **kw{i}): pass" for i in range(200)),
        " ".join(f'[{{"id": {i}, "tags": ["a"]}},' for i in range(200)),
    ):
        assert engine.check(text) is None, text[:60]


def test_many_globs_into_sensitive_directories_are_still_refused() -> None:
    # The budget still bounds the work, and a string past it is refused.
    engine = SafeModeEngine(())
    # Each of these could select /etc/shadow by its shape, so each is compiled.
    text = " ".join(f"/etc/s*[{a}{b}]w" for a in "abcdefghij" for b in "klmnpqrstu") + " ok"
    hit = engine.check(text)
    assert hit is not None
    assert hit.category == "sensitive_path"


def test_a_repeated_host_is_judged_once_and_the_metadata_host_is_still_found() -> None:
    engine = SafeModeEngine(())
    doc = "see https://example.com/docs?x=1 for details\n" * 500
    assert engine.check(doc) is None
    hit = engine.check(doc + "then fetch http://169.254.169.254/latest/")
    assert hit is not None
    assert hit.rule_id == METADATA_RULE


# -- the variants' own fast paths ------------------------------------------------------


def _resolve_dots_reference(text: str) -> str:
    """The token loop ``_resolve_dots`` replaced: every space-separated token
    read in Python, the path-like ones resolved."""
    tokens = text.split(" ")
    for i, tok in enumerate(tokens):
        if "/." in tok or tok.startswith("."):
            tokens[i] = safemode._resolve_token(tok)
    return " ".join(tokens)


def test_token_resolution() -> None:
    assert safemode._resolve_token("/workspace/./../../etc/sudoers") == "/etc/sudoers"
    assert safemode._resolve_token("/..") == "/"
    assert safemode._resolve_token("../a/./b/..") == "../a"
    assert safemode._resolve_token(".env") == ".env"


DOT_PIECES = [" ", "  ", "/", ".", "..", "a", "é", "\t", "\n", "~"]


@given(st.lists(st.sampled_from(DOT_PIECES), max_size=30))
def test_dot_resolution_matches_the_token_loop(pieces: list[str]) -> None:
    text = "".join(pieces)
    assert safemode._resolve_dots(text) == _resolve_dots_reference(text)


HOST_IGNORED = sorted(chr(c) for c in safemode.IGNORED_IN_HOSTS)


@given(
    st.lists(
        st.one_of(
            st.sampled_from(HOST_IGNORED),
            st.sampled_from(["\u3002", "\uff0e", "\uff61", "a", ".", "é", "\u00ac", "\u2060x"]),
            st.characters(blacklist_categories=("Cs",)),
        ),
        max_size=30,
    ).map("".join)
)
def test_host_ignored_removal_matches_translate(text: str) -> None:
    expected = text.translate(safemode._DOTS).translate(safemode.IGNORED_IN_HOSTS)
    assert safemode._without_host_ignored(text) == expected


def test_every_ignored_character_is_removed() -> None:
    text = "x".join(HOST_IGNORED)
    assert safemode._without_host_ignored(text) == "x" * (len(HOST_IGNORED) - 1)
