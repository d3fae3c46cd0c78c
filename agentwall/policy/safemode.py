"""Safe Mode: built-in rules that look for danger in every string.

Safe Mode runs on every string anywhere in a client request's params (keys
included) and on resource URIs, whatever the tool, and before any policy
``allow`` can matter: a tool's allow never overrides it.  A policy switches a
rule off only by naming its id (``safe_mode: {disable: [id, ...]}``, or per
tool).

Where policy patterns match the exact string, Safe Mode normalises first,
and only in ways that widen what it catches: each string is checked as
written and as a small set of variants -- percent-decoded (repeatedly),
NFKC-folded (fullwidth and other compatibility forms; Windows "best fit"
maps them to ASCII), lower-cased, ``\\`` read as ``/``, repeated ``/``
collapsed, ``.``/``..`` resolved, and shell quoting/escapes removed.  A rule
that matches any variant denies.  Benign text stays allowed because the
rules themselves are specific (boundaries around names, a download *piped
into* a shell, a removal *of* ``/`` or ``~``), not because the input is
trusted.
"""

from __future__ import annotations

import ipaddress
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from agentwall.policy.network import IGNORED_IN_HOSTS, classify_host
from agentwall.policy.patterns import compile_re2
from agentwall.policy.secrets import ANY_SOURCE as _SECRETS_ANY_SOURCE
from agentwall.policy.secrets import SECRET_RULES, find_secret

SENSITIVE_PATH = "sensitive_path"
RCE = "remote_code_execution"
SSRF = "ssrf"
SECRET = "secret"  # noqa: S105 -- a category name


@dataclass(frozen=True, slots=True)
class SafeRule:
    id: str
    category: str
    label: str  # "blocked <label>": says what, never echoes the value
    source: str | None = None  # lower-case text rule; None = handled in code
    exclude: str | None = None  # a match whose text matches this is benign


# Name characters: a sensitive name must not be glued to other name
# characters, so "my.ssh.notes" or "process.env" do not look like ".ssh"/".env".
_B = r"(?:^|[^a-z0-9_-])"
_E = r"(?:$|[^a-z0-9_.-])"

# A command prefix that runs the word after it as a command, with its
# options (and their values), VAR=value assignments and durations.
_WRAPPER = (
    r"(?:[a-z0-9_./-]*/)?(?:sudo|doas|env|command|exec|nohup|time|nice|ionice|stdbuf|setsid"
    r"|xargs|busybox|timeout|unbuffer|su)\b"
    r"(?:\s+(?:-{1,2}(?:[a-z0-9][a-z0-9-]*)?(?:=[^\s|;&]*)?(?:\s+[a-z0-9_.:@%+/-]+)?"
    r"|[a-z_][a-z0-9_]*=[^\s|;&]*|[0-9]+(?:\.[0-9]+)?[smhd]?))*"
)

# What destructive_rm protects: /, /*, /., ~, ~user, $HOME, ${HOME}, ${HOME:?}
# (and their /* and /.. forms: ~/../.. is /), as a whole operand.
_RM_TARGET_NO_END = r"(?:/|/\*/?|/\.|(?:~[a-z0-9_-]*|\$\{?home(?::[?-][^}\s]*)?\}?)(?:/\.\.)*/?\*?)"
_RM_TARGET = _RM_TARGET_NO_END + r"(?:$|[\s;&|)`])"
_RM_WORD = r"[^\s;&|`)]+"

TEXT_RULES: tuple[SafeRule, ...] = (
    SafeRule(
        "safe_mode.path.ssh",
        SENSITIVE_PATH,
        "access to SSH keys or the .ssh directory",
        rf"{_B}\.ssh{_E}|(?:^|[^a-z0-9_.-])id_(?:rsa|dsa|ecdsa|ed25519)(?:_sk)?(?:$|[^a-z0-9_-])"
        r"|/etc/ssh/ssh_host_[a-z0-9_]*key(?:$|[^a-z0-9_.-])",
    ),
    SafeRule(
        "safe_mode.path.cloud_credentials",
        SENSITIVE_PATH,
        "access to cloud credentials (AWS, GCP, Azure)",
        rf"{_B}\.aws(?:/|$)|{_B}\.azure(?:/|$)|{_B}\.config/gcloud(?:/|$)"
        r"|application_default_credentials\.json|/\.config/azure(?:/|$)",
    ),
    SafeRule(
        "safe_mode.path.kube_config",
        SENSITIVE_PATH,
        "access to Kubernetes credentials",
        rf"{_B}\.kube(?:/|$)|/etc/kubernetes/(?:[a-z-]+\.conf|pki)(?:/|$|[^a-z0-9_-])"
        r"|/run/secrets/kubernetes\.io(?:/|$)",
    ),
    SafeRule(
        "safe_mode.path.system_auth",
        SENSITIVE_PATH,
        "access to system password or sudo files",
        r"/etc/(?:shadow|gshadow|sudoers|master\.passwd|security/opasswd)(?:$|[^a-z0-9_])",
    ),
    SafeRule(
        "safe_mode.path.docker",
        SENSITIVE_PATH,
        "access to the Docker socket or Docker credentials",
        rf"docker\.sock(?:$|[^a-z0-9_])|{_B}\.docker/config\.json",
    ),
    SafeRule(
        "safe_mode.path.dotenv",
        SENSITIVE_PATH,
        "access to a .env file",
        rf"{_B}\.env(?:\.[a-z0-9_-]+)*{_E}",
        exclude=r"\.(?:example|sample|template|dist|defaults|schema)",
    ),
    SafeRule(
        "safe_mode.path.credential_files",
        SENSITIVE_PATH,
        "access to a credential file (.netrc, .git-credentials, .npmrc, .pypirc, ...)",
        rf"{_B}[._]netrc{_E}|{_B}\.git-credentials{_E}|{_B}\.npmrc{_E}|{_B}\.pypirc{_E}"
        rf"|{_B}\.pgpass{_E}|{_B}\.vault-token{_E}|{_B}\.cargo/credentials"
        rf"|{_B}\.config/gh/hosts\.yml|{_B}\.terraform\.d/credentials",
    ),
    SafeRule(
        "safe_mode.path.gnupg",
        SENSITIVE_PATH,
        "access to GnuPG keys",
        rf"{_B}\.gnupg{_E}|private-keys-v1\.d|secring\.gpg",
    ),
    SafeRule(
        "safe_mode.path.browser_profiles",
        SENSITIVE_PATH,
        "access to browser profile stores (cookies, saved passwords)",
        r"(?:\.config/(?:google-chrome|chromium|bravesoftware|microsoft-edge)"
        r"|\.mozilla/firefox|library/application support/(?:google/chrome|firefox"
        r"|bravesoftware|microsoft edge)|appdata/(?:local|roaming)/(?:google/chrome"
        r"|mozilla/firefox|microsoft/edge|bravesoftware))(?:/|$)",
    ),
    SafeRule(
        "safe_mode.path.process_secrets",
        SENSITIVE_PATH,
        "access to another process's environment or memory",
        r"/proc/(?:self|thread-self|[0-9]+)/(?:task/[0-9]+/)?(?:environ|mem|cmdline)(?:$|[^a-z0-9_])"
        r"|/proc/kcore(?:$|[^a-z0-9_])",
    ),
    SafeRule(
        "safe_mode.rce.pipe_to_shell",
        RCE,
        "a download piped into a shell or interpreter",
        # After the pipe, any run of wrappers that still run the next word as
        # a command (sudo -u root, env -i, doas, exec, nohup, busybox, ...)
        # with their options, option values, VAR=value and durations.
        r"\b(?:curl|wget|fetch|iwr|irm|invoke-webrequest|invoke-restmethod)\b[^\n]*\|&?\s*"
        rf"(?:{_WRAPPER}\s+)*"
        r"(?:(?:[a-z0-9_./-]*/)?"
        r"(?:sh|bash|zsh|ksh|dash|ash|fish|csh|tcsh|python[0-9.]*|pypy[0-9.]*|perl|ruby|node"
        r"|php|pwsh|powershell|iex|invoke-expression|lua[0-9.]*|luajit|tclsh|osascript|deno|bun)\b"
        r"|\$\{?shell\}?(?:$|[^a-z0-9_])|(?:source|\.)\s+/dev/(?:stdin|fd/0))",
    ),
    SafeRule(
        "safe_mode.rce.download_exec",
        RCE,
        "downloaded code executed through a shell substitution",
        r"(?:\b(?:sh|bash|zsh|ksh|dash|source|eval|python[0-9.]*|perl|ruby|node|php)\b"
        r"|(?:^|[\s;&|(])\.)\s*(?:-[a-z]+\s*)*[\"']?\s*(?:<\(|\$\(|`)\s*(?:sudo\s+)?"
        r"(?:curl|wget|fetch)\b"
        r"|\b(?:iex|invoke-expression)\b[^\n]*(?:downloadstring|\biwr\b|\birm\b"
        r"|invoke-webrequest|invoke-restmethod)"
        # A substitution in command position runs what the download printed.
        r"|(?:^|[;&|({\n]|\b(?:then|do|else)\b)\s*(?:sudo\s+)?(?:\$\(|`)\s*(?:sudo\s+)?"
        r"(?:curl|wget|fetch)\b"
        # Interpreter one-liners that evaluate what they fetch.
        r"|\b(?:exec|eval)\s*\(\s*(?:await\s*\(?\s*)*(?:[a-z_][a-z0-9_]*\.)*"
        r"(?:(?:urlopen|file_get_contents|fetch)\b|(?:get|open|read)\s*\(\s*[\"']https?:)",
    ),
    SafeRule(
        "safe_mode.rce.reverse_shell",
        RCE,
        "a reverse shell",
        r"/dev/(?:tcp|udp)/"
        r"|\b(?:nc|ncat|netcat)\b[^\n;|&]*\s(?:-[a-z]*[ec][a-z]*|--exec|--sh-exec|--lua-exec)\b"
        r"|\bsocat\b[^\n]*\b(?:exec|system):"
        r"|\b(?:mkfifo|mknod)\b[^\n]*\b(?:nc|ncat|netcat|telnet|openssl)\b"
        # A network client piped into a shell: commands from the network run.
        r"|\b(?:telnet|nc|ncat|netcat|openssl\s+s_client)\b[^\n]*\|\s*(?:[a-z0-9_./-]*/)?"
        r"(?:ba|z|da|k|c|tc)?sh\b"
        r"|\bsocket\b[^\n]*(?:os\.dup2|pty\.spawn)\("
        # Socket one-liners in perl/php/ruby/powershell that exec a shell.
        r"|(?:\bsocket\s*\(|\bfsockopen\s*\(|\btcpsocket\.(?:open|new)\b"
        r"|system\.net\.sockets\.tcpclient)[^\n]*"
        r"\b(?:exec|system|popen|proc_open|shell_exec|passthru|spawn|iex|invoke-expression)\b"
        r"|/inet/tcp/|\bztcp\b",
    ),
    SafeRule(
        "safe_mode.rce.destructive_rm",
        RCE,
        "a destructive removal of / or the home directory",
        rf"\brm\s+(?:-[a-z-]*\s+)*{_RM_TARGET}"
        # Other operands around it, with a recursive flag somewhere
        # ("rm -rf build /", "rm -r ./x ~ -f").
        rf"|\brm\s+(?:{_RM_WORD}\s+)*(?:-[a-z]*r[a-z]*|--recursive)\s+(?:{_RM_WORD}\s+)*"
        rf"{_RM_TARGET}"
        rf"|\brm\s+(?:{_RM_WORD}\s+)*{_RM_TARGET_NO_END}\s+(?:{_RM_WORD}\s+)*"
        r"(?:-[a-z]*r[a-z]*|--recursive)(?:$|[\s;&|)`])"
        r"|\bfind\s+(?:/|~|\$\{?home\}?)\s[^\n]*-delete\b",
    ),
    SafeRule(
        "safe_mode.rce.disk_wipe",
        RCE,
        "a command that overwrites a disk",
        r"\bmkfs(?:\.[a-z0-9]+)?\s[^\n;|&]*/dev/"
        r"|\bdd\b[^\n]*\bof=/dev/(?:sd|hd|vd|xvd|nvme|mmcblk|disk)",
    ),
    SafeRule(
        "safe_mode.ssrf.metadata",
        SSRF,
        "a request to a cloud metadata endpoint",
        r"169\.254\.169\.254|fd00:ec2::254|metadata\.google\.internal|100\.100\.100\.200",
    ),
    SafeRule(
        "safe_mode.ssrf.scheme",
        SSRF,
        "a file:, gopher: or dict: URL",
        r"(?:^|[^a-z0-9+.-])(?:file|gopher|dict|netdoc|phar|expect):/",
    ),
    SafeRule(
        "safe_mode.ssrf.private_network",
        SSRF,
        "a URL pointing to a loopback or private network address",
        None,
    ),
)

SAFE_RULES: tuple[SafeRule, ...] = TEXT_RULES + tuple(
    SafeRule(r.id, SECRET, f"{r.label} leaving in the arguments") for r in SECRET_RULES
)
SAFE_RULE_IDS: tuple[str, ...] = tuple(r.id for r in SAFE_RULES)
_BY_ID = {r.id: r for r in SAFE_RULES}
SCHEME_RULE = "safe_mode.ssrf.scheme"
METADATA_RULE = "safe_mode.ssrf.metadata"
PRIVATE_RULE = "safe_mode.ssrf.private_network"


@dataclass(frozen=True, slots=True)
class SafeHit:
    rule_id: str
    category: str
    reason: str


def _hit(rule_id: str) -> SafeHit:
    rule = _BY_ID[rule_id]
    return SafeHit(rule.id, rule.category, f"Safe Mode blocked {rule.label} ({rule.id})")


# URLs as lenient parsers read them: special schemes take a host even with
# no or one slash (WHATWG), others need "//".
_URL = compile_re2(
    r"(?:\b(?:https?|wss?|ftp)):/*([^/?#\s\"'<>`|]+)|\b[a-z][a-z0-9+.-]*://([^/?#\s\"'<>`|]*)"
)
# Commands that take a host or URL without a scheme: curl and wget default
# to http://, and parse the host as inet_aton does ("curl 0xa9fea9fe/latest"
# is IMDS); nc and telnet resolve numeric hosts the same way.
_FETCH_CMD = compile_re2(
    r"(?:^|[\s;&|(`'\"])(?:[a-z0-9_./-]*/)?"
    r"(curl|wget|https?|xh|aria2c|lynx|w3m|elinks|nc|ncat|netcat|telnet)(?:\s|\$\{?ifs\}?)"
)
_SEGMENT_END = compile_re2(r"[;&|\n`)]")
# For these only metadata counts: "nc -z localhost 8080" is a health check.
_RAW_SOCKET_CMDS = frozenset({"nc", "ncat", "netcat", "telnet"})
_BARE_HOST = compile_re2(r"^\s*(\[[0-9a-f:.%a-z]+\]|[0-9a-fx.]+)(?::[0-9]*)?(?:[/?#].*)?\s*$")
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
_ESCAPE = compile_re2(r"\\u([0-9a-fA-F]{4})|\\x([0-9a-fA-F]{2})")


def _percent_decode(text: str) -> str:
    for _ in range(4):
        if "%" not in text:
            break
        decoded = unquote(text, errors="replace")
        if decoded == text:
            break
        text = decoded
    return text


def _resolve_dots(text: str) -> str:
    """Resolve . and .. in every space-separated token that looks like a path
    (one that starts with "." or holds "/.").  Only those tokens reach Python:
    a document has thousands of others."""
    return str(_DOTTED_TOKEN.sub(_resolved_token, text))


# A space-separated token (after the space before it, kept as group 1) that
# starts with "." or holds "/.".
_DOTTED_TOKEN = compile_re2(r"(^| )(\.[^ ]*|[^ ]*/\.[^ ]*)")


def _resolved_token(m: Any) -> str:
    return str(m.group(1)) + _resolve_token(m.group(2))


def _resolve_token(tok: str) -> str:
    """One path-like token with its . and .. resolved."""
    out: list[str] = []
    for seg in tok.split("/"):
        if seg == ".":
            continue
        if seg == "..":
            if out and out[-1] not in ("", ".."):
                out.pop()
            elif not out:
                out.append("..")
            continue
        out.append(seg)
    resolved = "/".join(out)
    if tok.startswith("/") and not resolved.startswith("/"):
        resolved = "/" + resolved  # "/.." is "/"
    return resolved


# str.translate with a table costs ~80 ns a character on non-ASCII text (5 ms
# for 64 KiB here); these find the few characters it would change first.
_IDEOGRAPHIC_DOTS = tuple(chr(c) for c in _DOTS)
_HOST_IGNORED = compile_re2("[" + "".join(f"\\x{{{c:x}}}" for c in sorted(IGNORED_IN_HOSTS)) + "]")


def _without_host_ignored(text: str) -> str:
    """``text.translate(_DOTS).translate(IGNORED_IN_HOSTS)``."""
    if any(dot in text for dot in _IDEOGRAPHIC_DOTS):
        text = text.translate(_DOTS)
    if _HOST_IGNORED.contains(text):
        text = str(_HOST_IGNORED.sub("", text))
    return text


def _collapse(text: str) -> str:
    text = text.replace("\\", "/")
    while "//" in text:
        text = text.replace("//", "/")
    return text


def _deshell(text: str) -> str:
    for q in ("'", '"', "\\"):
        text = text.replace(q, "")
    for ifs in ("${ifs}", "$ifs"):
        text = text.replace(ifs, " ")
    return text


def _unescape(text: str) -> str:
    """\\uXXXX and \\xXX escapes written as text (a server that decodes the
    argument again would see the characters).  Surrogate escapes stay as
    written: a lone surrogate cannot be matched and is not a character."""

    def _char(m: Any) -> str:
        code = int(m.group(1) or m.group(2), 16)
        return m.group(0) if 0xD800 <= code <= 0xDFFF else chr(code)

    return str(_ESCAPE.sub(_char, text))


def _forms(t: str) -> tuple[str, list[str]]:
    if not t.isascii():
        # Invisible characters go too: URL parsers delete them from hosts.
        t = unicodedata.normalize("NFKC", _without_host_ignored(t))
    low = t.lower()
    v1 = _collapse(low) if ("\\" in low or "//" in low) else low
    out = [v1]
    if "/." in v1 or v1.startswith("."):
        v2 = _resolve_dots(v1)
        if v2 != v1:
            out.append(v2)
    if "'" in low or '"' in low or "\\" in low or "$" in low:
        v3 = _collapse(_deshell(low))
        out.append(v3)
        if "/." in v3:
            out.append(_resolve_dots(v3))
    return low, out


def variants(text: str) -> tuple[list[str], list[str]]:
    """(lowered decoded forms for URL parsing, text-rule variants)."""
    t = _percent_decode(text) if "%" in text else text
    low, out = _forms(t)
    lows = [low]
    if "\\u" in t or "\\x" in t:
        unescaped = _unescape(t)
        if unescaped != t:
            low2, out2 = _forms(unescaped)
            lows.append(low2)
            out.extend(out2)
    return lows, out


_MEMO_MAX_LEN = 96
_MEMO_ENTRIES = 4096


class _AllowEntry:
    __slots__ = ("name", "network", "suffix")

    def __init__(self, spec: str) -> None:
        self.network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
        self.name: str | None = None
        self.suffix: str | None = None
        text = spec.strip().lower()
        try:
            self.network = ipaddress.ip_network(text, strict=False)
            return
        except ValueError:
            pass
        if text.startswith("*."):
            self.suffix = text[1:]
        else:
            self.name = text.rstrip(".")

    def allows(self, host: str, ip: Any) -> bool:
        if self.network is not None:
            return ip is not None and ip.version == self.network.version and ip in self.network
        if self.suffix is not None:
            return host.endswith(self.suffix)
        return host == self.name


def parse_allow_private(spec: str) -> str | None:
    """Error text for an invalid allow_private entry, else None."""
    text = spec.strip()
    if not text:
        return "an empty entry"
    if "/" in text:
        try:
            ipaddress.ip_network(text, strict=False)
        except ValueError as exc:
            return str(exc)
    return None


# --- globs --------------------------------------------------------------------------
# A shell expands "cat /etc/sha*ow" or "cat ~/.ss?/id_*" to the sensitive file
# itself, so a glob that selects a sensitive path is judged as that path.  A
# glob counts only when it is targeted: it must match a sensitive path and
# none of its ordinary neighbours ("ls /etc/*" and "cat ~/.*rc" stay allowed).
_GLOB_SENSITIVE = (
    "/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/sudoers", "/etc/master.passwd",
    "/etc/ssh/ssh_host_rsa_key", "/etc/ssh/ssh_host_ed25519_key",
    "/etc/ssh/ssh_host_ecdsa_key", "/etc/kubernetes/admin.conf",
    "~/.ssh", "~/.ssh/id_rsa", "~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_dsa",
    "~/.ssh/authorized_keys", "~/.ssh/config", "~/.ssh/known_hosts",
    "~/.aws/credentials", "~/.aws/config", "~/.config/gcloud/credentials.db",
    "~/.config/gcloud/application_default_credentials.json", "~/.azure/accesstokens.json",
    "~/.kube/config", "~/.docker/config.json", "/var/run/docker.sock", "/run/docker.sock",
    "~/.netrc", "~/.git-credentials", "~/.npmrc", "~/.pypirc", "~/.pgpass", "~/.vault-token",
    "~/.gnupg/secring.gpg", "~/.gnupg/private-keys-v1.d",
    "/proc/self/environ", "/proc/1/environ", "/proc/self/mem", "/proc/self/cmdline",
    ".env", ".env.local", ".env.production",
)  # fmt: skip
_GLOB_NEIGHBOURS = (
    "/etc/hosts", "/etc/passwd", "/etc/hostname", "/etc/os-release", "/etc/services",
    "/etc/shells", "/etc/group", "/etc/resolv.conf", "/etc/ssl/certs", "/etc/ssh/ssh_config",
    "/etc/ssh/sshd_config", "/etc/systemd", "/etc/security",
    "~/x", "~/.bashrc", "~/.profile", "~/.bash_history", "~/.cache/x", "~/.config/x",
    "~/.local/share/x", "~/documents/x", "~/.config/x/config.json",
    "/proc/self/status", "/proc/cpuinfo", "/proc/1/status", "/proc/self/fd",
    "/var/run/utmp", "/run/user", "/var/run/x.pid", "/run/x.sock",
    ".env.example", ".editorconfig", ".eslintrc", ".gitignore",
)  # fmt: skip
_GLOB_HOME = compile_re2(r"^(?:/home/[^/]+|/users/[^/]+|/root|~[a-z0-9_-]*|\$\{?home\}?)(?:/|$)")
_GLOB_ROOTS = ("/etc/", "/proc/", "/run/", "/var/run/", "~/", "/home/", "/root/", "/users/")
_GLOB_MAX_TOKEN = 160
# A whitespace-separated word (as str.split() cuts them: the class is every
# character str.isspace() accepts) with a glob character in it.
_PY_SPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004"
    "\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_GLOB_WORD = compile_re2(f"[^{_PY_SPACE}]*[*?\\[][^{_PY_SPACE}]*")
# Every literal prefix a glob reaching a sensitive path can start with.
_GLOB_PREFIXES = frozenset(c[:i] for c in _GLOB_SENSITIVE for i in range(len(c) + 1))
# Compiling a glob costs ~25 us; past this many distinct globs reaching into
# sensitive directories in one string, the rest are judged as targeted
# rather than compiled (no legitimate argument holds that many).
_GLOB_MAX_COMPILED = 64
# What a glob form selects is a pure function of the form, and the same forms
# ("*" in arithmetic, "*args", "/tmp/*") recur in every call that carries code.
# Remembering them changes no decision; the table is bounded and cleared whole.
_GLOB_MEMO: dict[str, tuple[str, ...]] = {}
_GLOB_MEMO_MAX = 4096


def _glob_units(token: str) -> list[str]:
    """The glob as RE2 pieces, one per unit: ``.*`` for ``*`` (which, like
    ``?``, also matches "/", as a sweep over several directories would), and
    one single-character piece for each ``?``, ``[...]`` class or character."""
    out: list[str] = []
    i, n = 0, len(token)
    while i < n:
        c = token[i]
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            j = token.find("]", i + 2)
            if j < 0:
                out.append(r"\[")
            else:
                body = token[i + 1 : j]
                negate = body[:1] in ("!", "^")
                body = body[1:] if negate else body
                cls = "".join("\\" + ch if ch in "\\]^[" else ch for ch in body)
                out.append(f"[{'^' if negate else ''}{cls}]")
                i = j
        else:
            out.append("\\" + c if not c.isalnum() else c)
        i += 1
    return out


def _glob_regex(token: str) -> Any:
    """The glob as an anchored RE2 pattern, or None if it is not one."""
    try:
        return compile_re2("^(?:" + "".join(_glob_units(token)) + ")$")
    except Exception:  # noqa: BLE001 -- not a glob we can read: judged as text
        return None


def _glob_targets(v: str) -> list[str]:
    """Sensitive paths that a targeted glob in ``v`` selects."""
    found: list[str] = []
    seen: set[str] = set()
    compiled = 0
    # A document repeats its words ("*" bullets, the same subscript): each
    # distinct one is read once.
    for word in dict.fromkeys(_GLOB_WORD.findall(v)):
        token = word.strip("'\"<>;&|()`")
        if not token or len(token) > _GLOB_MAX_TOKEN or token in seen:
            continue
        seen.add(token)
        forms = {token}
        for root in _GLOB_ROOTS:
            at = token.find(root)
            if at > 0:
                forms.add(token[at:])
        last = token.rsplit("/", 1)[-1]
        if last.startswith(".e"):
            forms.add(last)
        for form in forms:
            home = _GLOB_HOME.match(form)
            if home is not None:
                form = "~/" + form[home.end() :]
            prefix = form
            for meta in "*?[":
                cut = prefix.find(meta)
                if cut >= 0:
                    prefix = prefix[:cut]
            if prefix not in _GLOB_PREFIXES:
                continue
            known = _GLOB_MEMO.get(form)
            if known is not None:
                found.extend(known)
                continue
            candidates = _could_select(form, prefix)
            if candidates:
                compiled += 1
                if compiled > _GLOB_MAX_COMPILED:
                    return candidates
                hits = _glob_hits(form, candidates)
            else:
                hits = ()
            if len(_GLOB_MEMO) >= _GLOB_MEMO_MAX:
                _GLOB_MEMO.clear()
            _GLOB_MEMO[form] = hits
            found.extend(hits)
    return found


def _could_select(form: str, prefix: str) -> list[str]:
    """The sensitive paths ``form`` might select, by what they must start and
    end with and how long they must be (every unit but ``*`` matches exactly
    one character).  Only these need the compiled glob, so ordinary code
    ("[0]", "*args") never reaches the compile cap."""
    tail = form[max(form.rfind("*"), form.rfind("?"), form.rfind("["), form.rfind("]")) + 1 :]
    units = _glob_units(form)
    width = len(units) - units.count(".*")
    exact = width == len(units)
    return [
        c
        for c in _GLOB_SENSITIVE
        if c.startswith(prefix)
        and c.endswith(tail)
        and (len(c) == width if exact else len(c) >= width)
    ]


def _glob_hits(form: str, candidates: list[str]) -> tuple[str, ...]:
    rx = _glob_regex(form)
    if rx is None:
        return ()
    hits = tuple(c for c in candidates if rx.match(c) is not None)
    if hits and any(rx.match(n) is not None for n in _GLOB_NEIGHBOURS):
        return ()
    return hits


class SafeModeEngine:
    """Safe Mode compiled for one set of enabled rules."""

    __slots__ = (
        "_allow",
        "_any",
        "_disabled",
        "_memo",
        "_metadata_on",
        "_plain_gate",
        "_private_on",
        "_rules",
        "_scheme_on",
        "disabled",
    )

    def __init__(self, disabled: Iterable[str], allow_private: Iterable[str] = ()) -> None:
        self.disabled = frozenset(disabled)
        self._disabled = self.disabled
        enabled = [r for r in TEXT_RULES if r.source is not None and r.id not in self.disabled]
        self._rules = tuple(
            (r, compile_re2(r.source or ""), compile_re2(r.exclude) if r.exclude else None)
            for r in enabled
        )
        self._any = compile_re2("|".join(f"(?:{r.source})" for r in enabled)) if enabled else None
        self._scheme_on = SCHEME_RULE not in self.disabled
        self._metadata_on = METADATA_RULE not in self.disabled
        self._private_on = PRIVATE_RULE not in self.disabled
        self._allow = tuple(_AllowEntry(s) for s in allow_private)
        self._plain_gate = _plain_gate(
            self._any.pattern if self._any is not None else None,
            hosts=self._metadata_on or self._private_on,
        )
        # Keys, tool names and short values repeat from call to call.  The
        # check is a pure function of the string, so remembering recent
        # answers changes no decision; the table is bounded and cleared whole.
        self._memo: dict[str, SafeHit | None] = {}

    def check(self, text: str, *, resource_uri: bool = False) -> SafeHit | None:
        """The first rule that ``text`` trips, or None.  ``resource_uri``: the
        string is a resource URI, whose scheme is an identifier, not a fetch."""
        if len(text) <= _MEMO_MAX_LEN and not resource_uri:
            memo = self._memo
            if text in memo:
                return memo[text]
            hit = self._check(text, False)
            if len(memo) >= _MEMO_ENTRIES:
                memo.clear()
            memo[text] = hit
            return hit
        return self._check(text, resource_uri)

    def _check(self, text: str, resource_uri: bool) -> SafeHit | None:
        if text.isascii() and not self._plain_gate.contains(text):
            # One pass instead of a dozen (see _plain_gate): nothing below
            # can match a string the gate passes.
            return None
        return self._check_variants(text, resource_uri)

    def _check_variants(self, text: str, resource_uri: bool) -> SafeHit | None:
        lows, texts = variants(text)
        if self._any is not None:
            for v in texts:
                if not self._any.contains(v):
                    continue
                hit = self._which(v, resource_uri)
                if hit is not None:
                    return hit
        if "*" in text or "?" in text or "[" in text:
            for v in texts:
                for target in _glob_targets(v):
                    hit = self._which(target, False)
                    if hit is not None:
                        return hit
        if self._metadata_on or self._private_on:
            for low in lows:
                hit = self._check_hosts(low)
                if hit is not None:
                    return hit
        secret = find_secret(text, self._disabled)
        if secret is None and "%" in text:
            secret = find_secret(_percent_decode(text), self._disabled)
        if secret is not None:
            return _hit(secret.id)
        return None

    def _which(self, v: str, resource_uri: bool) -> SafeHit | None:
        for rule, rx, exclude in self._rules:
            if resource_uri and rule.id == SCHEME_RULE:
                continue
            for m in rx.finditer(v):
                if exclude is not None and exclude.contains(m.group(0)):
                    continue
                return _hit(rule.id)
        return None

    def _check_hosts(self, low: str) -> SafeHit | None:
        hosts: list[str] = []
        if ":" in low:
            # A document names the same few hosts again and again: each
            # distinct authority is classified once, in order of appearance.
            authorities = dict.fromkeys(
                special or other or "" for special, other in _URL.findall(low.replace("\\", "/"))
            )
            hosts = list(dict.fromkeys(_host_of(authority) for authority in authorities))
        scheme_less: list[tuple[str, bool]] = []
        if _FETCH_CMD.contains(low):
            scheme_less = _scheme_less_hosts(low)
        bare: str | None = None
        if not hosts and not scheme_less and low[:1] in "0123456789[":
            # A string that is only an address (an "ip" or "host" argument).
            # Only metadata counts here, and only in address-like spellings:
            # bare numbers such as order ids or versions stay allowed.
            m = _BARE_HOST.match(low)
            if m is not None and (
                "." in m.group(1) or m.group(1)[:1] == "[" or m.group(1).startswith("0x")
            ):
                bare = m.group(1)
        if bare is not None:
            cls, _, _ = classify_host(bare)
            if cls == "metadata" and self._metadata_on:
                return _hit(METADATA_RULE)
        for host, private_counts in [*((h, True) for h in hosts), *scheme_less]:
            cls, clean, ip = classify_host(host)
            if cls == "metadata" and self._metadata_on:
                return _hit(METADATA_RULE)
            if cls == "private" and self._private_on and private_counts:
                if any(entry.allows(clean, ip) for entry in self._allow):
                    continue
                return _hit(PRIVATE_RULE)
        return None


# Characters and pairs that make ``variants`` produce more than the lowered
# string, or start a glob: percent, backslash, quotes, ``$``, ``//``, ``/.``, a
# leading ``.``; ``*``, ``?`` and ``[``; and a leading digit or bracket (a bare
# address).
_PLAIN_BREAKERS = r"[%\\'\"$*?\[]|//|/\.|^[.0-9]"


def _plain_gate(text_rules: str | None, *, hosts: bool) -> Any:
    """One RE2 pattern that finds nothing in an ASCII string only if
    ``SafeModeEngine._check`` would find nothing in it either.

    For such a string ``variants`` gives just its lower-case form (every
    character that would make another variant is in ``_PLAIN_BREAKERS``),
    so the rules need only that form.  The text rules, the URL and fetch
    patterns run on it case-insensitively on the string as written, which
    matches wherever the case-sensitive pattern matches the lowered string:
    the patterns are written in lower case and their negated classes name no
    upper-case letter (tests/policy/test_safemode_gate.py checks both, and
    compares the gated check with the full one).  The secret rules run as
    they do in ``find_secret``, on the string as written.  A match of the gate
    says only "look closer": the full check then runs."""
    parts = [f"(?:{_SECRETS_ANY_SOURCE})", _PLAIN_BREAKERS]
    if text_rules is not None:
        parts.append(f"(?i:{text_rules})")
    if hosts:
        parts.append(f"(?i:{_URL.pattern})")
        parts.append(f"(?i:{_FETCH_CMD.pattern})")
    return compile_re2("|".join(parts))


def _scheme_less_hosts(low: str) -> list[tuple[str, bool]]:
    """Hosts written without a scheme after curl, wget, nc and friends, with
    whether the private-network rule applies to each.  Option values are
    read too (a host is recognisable, a timeout is not one): only tokens that
    spell an address (a digit or bracket first) or a known name are kept,
    and a private host only counts with a port, a path, a dotted quad, brackets
    or a name, so "curl -m 0.5 https://x" stays a timeout.  Segments do not
    overlap, so the scan is linear."""
    out: list[tuple[str, bool]] = []
    seen: set[str] = set()
    pos = 0
    while True:
        m = _FETCH_CMD.search(low, pos)
        if m is None:
            return out
        end_m = _SEGMENT_END.search(low, m.end())
        end = len(low) if end_m is None else end_m.start()
        raw_socket = m.group(1) in _RAW_SOCKET_CMDS
        segment = low[m.end() : end].replace("${ifs}", " ").replace("$ifs", " ")
        pos = max(end, m.end())
        for token in segment.split():
            token = token.strip("'\"")
            if token.startswith("-"):
                if "=" not in token:
                    continue
                token = token.split("=", 1)[1].strip("'\"")
            if not token or "://" in token or token in seen:
                continue
            seen.add(token)
            head = token
            for sep in "/?#":
                head = head.split(sep, 1)[0]
            host = _host_of(head)
            if not host:
                continue
            if host[:1] not in "0123456789[" and not _is_named_host(host):
                continue
            addressy = (
                head != token or ":" in head.lstrip("[").split("]")[-1]
                or host.startswith("[") or host.count(".") >= 3 or _is_named_host(host)
            )  # fmt: skip
            out.append((host, addressy and not raw_socket))


def _is_named_host(host: str) -> bool:
    from agentwall.policy.network import LOOPBACK_NAMES, METADATA_NAMES

    name = host.rstrip(".")
    return (
        name in METADATA_NAMES
        or name in LOOPBACK_NAMES
        or name.endswith((".localhost", ".nip.io", ".sslip.io", ".xip.io", ".internal"))
    )


def _host_of(authority: str) -> str:
    host = authority.rsplit("@", 1)[-1]
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end != -1 else host
    return host.split(":", 1)[0]
