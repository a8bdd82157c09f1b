"""Credentials given to a command on its command line: `mysql -pX`, `sshpass -p X`,
`docker login -p X`, `curl -u user:X`, `redis-cli -a X`, `ldapsearch -w X`,
`--password X`, `openssl … -pass pass:X`, `echo X | docker login --password-stdin`,
`htpasswd -b FILE USER X`.

A command's options are read up to its end only (its line, with its `\\` continuations,
or a `;`, `&&` or `|`), and each
family of commands reads a line at most once, so the cost stays linear in the text. On a
command line a placeholder *word* is a value (`curl -u admin:pass` was typed to be used);
only placeholder syntax (`$PASS`, `<password>`, `***`) is not.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final

from reflection.secret_values import (
    Span,
    is_placeholder,
    looks_like_a_credential,
    starts_argument,
    starts_word,
)

_PW_KIND = "Password"
_KEYWORD_KIND = "Secret Keyword"

_USER_AND_PW = r"(?:[ \t]++|=)?(?P<q>['\"]?)(?P<user>[^\s:'\"`]*+):(?P<value>[^\s'\"`]++)"
_QUOTED_ARG = r"(?P<q>['\"]?)(?P<value>[^\s'\"`]++)(?P=q)"
# (command words, the option that carries the credential, whether the line must say
# `login`): the option is looked for only on the command's own line (with its `\`
# continuations).
_OPTION_P = r"(?<!\S)-p[ \t]*+" + _QUOTED_ARG  # -p X or -pX
_COMMAND_OPTIONS: Final = (
    # curl -u user:pass (httpie: -a user:pass); the user part is not secret
    (r"curl|wget", r"(?<!\S)(?:-u|--user)" + _USER_AND_PW, False),
    (r"http|https|xh", r"(?<!\S)(?:-a|--auth)" + _USER_AND_PW, False),
    # mysql -pSecret (attached only: `-p secret` prompts, `secret` being the database)
    (r"mysql[\w-]*+|mariadb[\w-]*+", r"(?<!\S)-p" + _QUOTED_ARG, False),
    (r"sshpass", _OPTION_P, False),
    (r"docker|podman|nerdctl|buildah|skopeo|oras|helm|crane|regctl", _OPTION_P, True),
    (r"mongo(?:sh|dump|restore|export|import|stat|top|files)?", _OPTION_P, False),
    (r"redis-cli|valkey-cli|keydb-cli", r"(?<!\S)-a[ \t]++" + _QUOTED_ARG, False),
    (r"ldap(?:search|add|modify|delete|whoami|compare)", r"(?<!\S)-w[ \t]++" + _QUOTED_ARG, False),
)  # fmt: skip
_COMMAND_FAMILIES = tuple(
    (re.compile(words), re.compile(option), login) for words, option, login in _COMMAND_OPTIONS
)
# All the command words in one alternation of literals, which the engine scans for fast.
_COMMAND_WORD = re.compile(
    "(?:" + "|".join(words for words, _, _ in _COMMAND_OPTIONS) + r")(?![\w-])"
)
_LOGIN = re.compile(r"\blogin\b")
# A shell operator between blanks, a `;` before one, or an unescaped end of line (an `&`
# or `|` inside a quoted URL does not end the command).
_COMMAND_END = re.compile(r"[ \t](?:&&|\|\|?)[ \t]|;(?=\s)|(?<!\\)\n")
# `--password X`, `--password=X`, `--api-key X`, `--client-secret=X` on any command.
_LONG_OPTION = re.compile(
    r"--(?:[a-z0-9]++-)*?(?P<word>password|passwd|passphrase|pass|token|secret"
    r"|api-?key|access-key|secret-key)(?![\w-])(?:[ \t]++|=)" + _QUOTED_ARG
)
_STRICT_OPTIONS: Final = frozenset({"pass", "token", "secret"})
# `openssl … -pass pass:X`, `smbclient -U user%pass`
_INLINE_PASSWORD = re.compile(
    r"-(?:pass(?:in|out)?[ \t]++pass:(?P<value>\S++)"
    r"|(?:U|-user(?:name)?)(?:[ \t]++|=)[^\s%]++%(?P<smb>\S++))"
)
# `echo X | docker login --password-stdin`, `echo X | sudo -S …`, `echo u:p | chpasswd`
_ECHO_PIPE = re.compile(
    r"(?:echo|printf)[ \t]++(?:-[a-zA-Z]++[ \t]++)?" + _QUOTED_ARG
    + r"[ \t]*+\|[ \t]*+(?P<sudo>sudo[ \t]++)?(?P<cmd>[\w-]++)(?P<rest>[^\n|;&]*+)"
)  # fmt: skip
_HTPASSWD = re.compile(r"htpasswd(?P<args>(?:[ \t]++\S++){2,6})")
_ARG = re.compile(r"\S++")


def _command_end(text: str, pos: int) -> int:
    """The end of the command at `pos`: the end of its line (through `\\` continuations)
    or a `;`, `&&`, `||` or `|` that starts the next command (`docker login … && docker
    run -p 8080:80` gives no password)."""
    m = _COMMAND_END.search(text, pos)
    return len(text) if m is None else m.start()


def _command_value(m: re.Match[str]) -> Span | None:
    value = m.group("value")
    if value.startswith("-") or is_placeholder(value, words=False):
        return None
    user = m.groupdict().get("user")
    if user is not None and (user.isdigit() or user == "") and value.isdigit():
        return None  # `docker run -u 1000:1000` is a uid and a gid
    return Span(*m.span("value"), _PW_KIND)


def find_command_passwords(text: str) -> Iterator[Span]:
    """Passwords given to a command on its command line (`mysql -pX`, `sshpass -p X`,
    `docker login -p X`, `curl -u user:X`, `redis-cli -a X`, `ldapsearch -w X`)."""
    yield from _find_option_values(text)
    yield from _find_long_options(text)
    yield from _find_piped_passwords(text)
    yield from _find_htpasswd(text)
    for m in _INLINE_PASSWORD.finditer(text):
        group = "value" if m.group("value") else "smb"
        if starts_argument(text, m.start()) and not is_placeholder(m.group(group), words=False):
            yield Span(*m.span(group), _PW_KIND)


def _find_option_values(text: str) -> Iterator[Span]:
    """The password option of each known command family, read up to its command's end."""
    read_to = [0] * len(_COMMAND_FAMILIES)  # each family reads a line at most once
    for m in _COMMAND_WORD.finditer(text):
        if not starts_word(text, m.start(), "./-"):
            continue
        for family, (words, option, login) in enumerate(_COMMAND_FAMILIES):
            if m.start() < read_to[family] or not words.fullmatch(m.group()):
                continue
            end = read_to[family] = _command_end(text, m.end())
            if login and not _LOGIN.search(text, m.end(), end):
                continue
            for o in option.finditer(text, m.end(), end):
                if (span := _command_value(o)) is not None:
                    yield span


def _find_long_options(text: str) -> Iterator[Span]:
    for m in _LONG_OPTION.finditer(text):
        value, word = m.group("value"), m.group("word")
        if not starts_word(text, m.start(), "-") or value.startswith("-") or is_placeholder(value):
            continue
        if word in _STRICT_OPTIONS or "key" in word:
            if not looks_like_a_credential(value, 8):
                continue
        elif len(value) < 4:
            continue
        yield Span(*m.span("value"), _PW_KIND if "pass" in word else _KEYWORD_KIND)


def _find_piped_passwords(text: str) -> Iterator[Span]:
    for m in _ECHO_PIPE.finditer(text):
        if not starts_word(text, m.start(), "-"):
            continue
        cmd, rest = m.group("cmd"), m.group("rest")
        if m.group("sudo"):
            piped = cmd == "-S" or rest.lstrip().startswith("-S")
        else:
            piped = cmd == "chpasswd" or "--password-stdin" in rest
        if piped and not is_placeholder(m.group("value"), words=False):
            yield Span(*m.span("value"), _PW_KIND)


def _find_htpasswd(text: str) -> Iterator[Span]:
    """`htpasswd -b [-c] FILE USER PASSWORD` (`-n`: no FILE): batch mode takes the
    password as its last argument."""
    for m in _HTPASSWD.finditer(text):
        if not starts_word(text, m.start(), "./-"):
            continue
        args = list(_ARG.finditer(m.group("args")))
        flags = "".join(a.group()[1:] for a in args if a.group().startswith("-"))
        plain = [a for a in args if not a.group().startswith("-")]
        wanted = 2 if "n" in flags else 3
        if "b" in flags and len(plain) >= wanted:
            arg = plain[wanted - 1]
            if not is_placeholder(arg.group(), words=False):
                base = m.start("args")
                yield Span(base + arg.start(), base + arg.end(), _PW_KIND)
