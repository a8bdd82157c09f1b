"""Dangerous directives: text that tells an agent to download and run code, open a reverse
shell, or send credentials out (issue 22, item 7; the code `dangerous_directive`).

Memory bodies and piece instructions are read by agents that can run a shell, so a
reflection must not plant `curl https://… | sh` in them. The detector reads text line by
line (a backslash-continued line is one line) and flags:

- download-and-execute: a downloader (`curl`, `wget`, `fetch`, `iwr`, `irm`,
  `Invoke-WebRequest`, `Invoke-RestMethod`) with an argument, piped later on the line into
  an interpreter (`sh`, `bash`, `zsh`, `python`, `perl`, `ruby`, `node`, `php`, `iex`,
  behind `sudo` or `env` too); or a downloader run inside `$(…)`, backticks or `<(…)`
  handed to an interpreter, `eval` or `source`;
- decode-and-execute: `base64 -d` (`--decode`, `-D`) piped later on the line into an
  interpreter, or inside `$(…)` handed to `eval`, `sh -c` and the like;
- a reverse shell: `nc`/`ncat`/`netcat` with `-e`/`-c`, a redirection to `/dev/tcp/` or
  `/dev/udp/`, `socat … exec:`, `mkfifo` with `nc` on one line;
- credential exfiltration: a network sender (`curl`, `wget`, `nc`, `http`, `iwr`, …)
  given the whole environment (`env | curl …`, `$(printenv)`), a credential file
  (`-d @~/.aws/credentials`, `-T ~/.ssh/id_rsa`, `--post-file=.env`), or a variable whose
  name says secret (`$AWS_SECRET_ACCESS_KEY`, `${API_TOKEN}`, `$env:GITHUB_TOKEN`) in its
  data, form, upload or URL, not in an `Authorization:` header (which is how such a token
  is meant to be used); Python posting `os.environ`.

Not flagged: `curl -o file URL`, `curl … | jq`, `pip install`, `base64 -d file > out`,
`nc -z host port`, prose naming bash, and a pipe into a shell with nothing to download
("never run curl | sh").

Judging asks what an edit *gains* (`gained`): a directive already in the entry or piece
being edited may stay; a new or changed one is refused.

Every rule is a scan over the line's tokens or an anchored regex, linear in the text.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Final

DOWNLOAD_EXEC: Final = "download-and-execute"
DECODE_EXEC: Final = "decode-and-execute"
REVERSE_SHELL: Final = "reverse shell"
EXFILTRATION: Final = "credential exfiltration"

_DOWNLOADERS: Final = frozenset(
    {"curl", "wget", "fetch", "iwr", "irm", "invoke-webrequest", "invoke-restmethod"}
)
_SENDERS: Final = _DOWNLOADERS | {"nc", "ncat", "netcat", "http", "https", "xh", "socat"}
_INTERPRETER: Final = (
    r"(?:(?:ba|z|da|k|c|tc|fi)?sh|python[0-9.]*|perl|ruby|node|php|pwsh|powershell|iex)"
)
# `| sudo -E bash`, `| env python3`, `| /bin/sh`: a pipe into an interpreter.
_PIPE_INTO_INTERPRETER: Final = re.compile(
    r"\|\s*(?:sudo(?:\s+-\S+)*\s+)?(?:env\s+)?(?:/\S*/)?"
    + r"(?P<interpreter>"
    + _INTERPRETER
    + r")(?![\w.-])"
)
# Where an interpreter's arguments end: the next pipe, command, redirection or group end.
_ARGUMENTS_END: Final = re.compile(r"[|;&>)`]")
_PROGRAM_FLAGS: Final = frozenset({"-c", "-m", "-e", "-command", "-file", "-r"})


def _runs_stdin(line: str, pipe: re.Match[str]) -> bool:
    """Whether the interpreter a pipe leads into runs what it reads: it has no script
    argument (`| sh`, `| bash -s -- --yes`, `| python3 -`), rather than a program of
    its own (`| python3 -m json.tool`, `| python3 load.py`, `| sh -c 'cat > f'`)."""
    if pipe.group("interpreter") == "iex":
        return True
    rest = line[pipe.end() : pipe.end() + 200]
    end = _ARGUMENTS_END.search(rest)
    for word in rest[: end.start() if end else None].split()[:12]:
        word = word.strip("\"'")
        if word in {"-", "-s"}:
            return True
        if word in _PROGRAM_FLAGS or not word.startswith("-"):
            return False
    return True


# `bash <(curl …)`, `sh -c "$(wget …)"`, `eval "$(curl …)"`, `python3 -c "`curl …`"`.
_RUN_SUBSTITUTION: Final = re.compile(
    r"(?:^|[\s;&|(])(?:" + _INTERPRETER + r"|eval|source|\.)(?:\s+-\S+)*\s+[\"']?"
    r"(?:<\(|\$\(|`)"
)
_BASE64_DECODE: Final = re.compile(r"\bbase64\s+(?:-\S*\s+)*(?:-d|--decode|-D)\b")
_DEV_NET: Final = re.compile(r"[<>]&?\s*/dev/(?:tcp|udp)/")
_QUOTES: Final = "`'\"(){};&<>$"
# `nc -e /bin/sh host port`, `ncat host port -e bash`: netcat told to run a program (the
# words between are bounded, so a run of `nc` words costs a bounded scan each).
_NETCAT_EXEC: Final = re.compile(
    r"(?<![\w.-])(?:nc|ncat|netcat)(?:\s+[^\s|;&]+){0,8}?\s+(?:-e|-c|--exec|--sh-exec)\s+"
    r"[\"']?(?:/\S*/)?(?:(?:ba|z|da|k)?sh|cmd(?:\.exe)?|powershell|pwsh|python[0-9.]*|perl)\b"
)
_WORD: Final = re.compile(r"[A-Za-z][\w.-]*")
_SECRET_VAR: Final = re.compile(r"\$(?:env:)?\{?(?P<name>[A-Za-z_][A-Za-z0-9_]*)", re.IGNORECASE)
_SECRET_NAME: Final = re.compile(
    r"secret|token|passw|passwd|pwd|api_?key|access_?key|private|credential|cred|session|"
    r"cookie|auth(?!or)|_key$|^key$",
    re.IGNORECASE,
)
_AUTH_HEADER: Final = re.compile(
    r"authorization\s*:\s*(?:bearer|token|basic)?\s*[\"']?$", re.IGNORECASE
)
_ENV_DUMP: Final = re.compile(r"(?:\$\(|`)\s*(?:env|printenv|set|export\s+-p)\s*(?:\)|`)")
# A stage ending in a dump of the environment ("then run: env | curl …").
_ENV_STAGE: Final = re.compile(r"(?:^|[\s;&(`:])(?:env|printenv|set|export\s+-p)\s*$")
_CREDENTIAL_FILE: Final = re.compile(
    r"(?:^|[/~@=\s\"'])(?:\.env\b|\.aws/|\.ssh/|id_rsa|id_ed25519|id_ecdsa|\.netrc|"
    r"\.git-credentials|\.kube/config|\.docker/config\.json|/etc/shadow|/etc/passwd|"
    r"credentials\b)",
    re.IGNORECASE,
)
_CAT_CREDENTIALS: Final = re.compile(r"(?:^|[\s;&(`:])(?:cat|tar|zip|gzip|base64)\s")
_UPLOAD_FLAG: Final = re.compile(
    r"(?:^|\s)(?:-d|--data(?:-\w+)?|-F|--form|-T|--upload-file|--post-file=?|"
    r"--post-data=?|--body-file=?|-infile|-body)(?:\s|=|$|@)",
    re.IGNORECASE,  # lines are lower-cased: `-f` is read as `-F`, `-t` as `-T`
)
_PY_ENVIRON: Final = re.compile(r"os\.environ|os\.getenv\(|dict\(os\.environ")
_PY_SEND: Final = re.compile(r"requests\.\w+\(|urlopen\(|http\.client|httpx\.\w+\(")


def _lines(text: str) -> list[str]:
    """The text's lines, lower-cased, a backslash-continued line joined to the next."""
    joined = re.sub(r"\\\r?\n", " ", text)
    return joined.lower().splitlines()


def _commands(stage: str) -> list[str]:
    """The command words of a pipeline stage's simple commands (`;`, `&&`, `(`, `$(`,
    backticks start a new one; `sudo`, `env` and `VAR=value` prefixes are skipped)."""
    found = []
    for part in re.split(r"&&|;|\$\(|\(|`|\{", stage):
        words = part.split()
        while words and (words[0] in {"sudo", "env", "exec", "time", "nohup"} or "=" in words[0]):
            words.pop(0)
        if words:
            match = _WORD.match(words[0].rsplit("/", 1)[-1])
            if match:
                found.append(match.group(0))
    return found


def _stages(line: str) -> list[str]:
    """A line's pipeline stages (`a | b | c`; `||` does not split)."""
    return re.split(r"(?<!\|)\|(?!\|)", line)


def _downloads_with_argument(line: str) -> list[int]:
    """Positions of each downloader word followed by at least one non-option argument
    before the next pipe (`curl | sh` downloads nothing). One pass over the words: the
    look-ahead from a downloader stops at its first argument."""
    words = [(m.start(), m.group(0)) for m in re.finditer(r"[^\s|]+|\|", line)]
    found = []
    for i, (pos, word) in enumerate(words):
        if word.strip(_QUOTES).rsplit("/", 1)[-1] not in _DOWNLOADERS:
            continue
        for j in range(i + 1, len(words)):
            arg = words[j][1]
            if arg == "|":
                break
            if not arg.strip(_QUOTES).startswith("-"):
                found.append(pos)
                break
    return found


def _download_exec(line: str) -> bool:
    pipes = [m.start() for m in _PIPE_INTO_INTERPRETER.finditer(line) if _runs_stdin(line, m)]
    downloads = _downloads_with_argument(line)
    if downloads and pipes and min(downloads) < max(pipes):
        return True
    for m in _RUN_SUBSTITUTION.finditer(line):
        inner = _commands(line[m.end() - 2 : m.end() + 200])
        if inner and inner[0] in _DOWNLOADERS:
            return True
    return False


def _decode_exec(line: str) -> bool:
    decodes = [m.start() for m in _BASE64_DECODE.finditer(line)]
    if not decodes:
        return False
    pipes = [m.start() for m in _PIPE_INTO_INTERPRETER.finditer(line) if _runs_stdin(line, m)]
    if pipes and min(decodes) < max(pipes):
        return True
    return any(m.start() < max(decodes) for m in _RUN_SUBSTITUTION.finditer(line))


def _reverse_shell(line: str) -> bool:
    if _DEV_NET.search(line):
        return True
    if _NETCAT_EXEC.search(line):
        return True
    for stage in _stages(line):
        words = stage.split()
        if "socat" in _commands(stage) and any(w.startswith(("exec:", "system:")) for w in words):
            return True
    return "mkfifo" in line and bool(set(re.findall(r"\b(?:nc|ncat|netcat)\b", line)))


def _secret_variables(segment: str) -> bool:
    """Whether a network command's text passes a secret-named variable other than as an
    `Authorization:` header's value."""
    for m in _SECRET_VAR.finditer(segment):
        header = segment[max(0, m.start() - 80) : m.start()]
        if _SECRET_NAME.search(m.group("name")) and not _AUTH_HEADER.search(header):
            return True
    return False


def _feeds_secrets(before: str) -> bool:
    """Whether a pipeline stage hands the next one the environment or a credential file."""
    return bool(
        _ENV_STAGE.search(before)
        or (_CAT_CREDENTIALS.search(before) and _CREDENTIAL_FILE.search(before))
    )


def _sends_secrets(stage: str) -> bool:
    """Whether a network command sends the environment, a secret-named variable (outside
    an `Authorization:` header) or a credential file."""
    if _ENV_DUMP.search(stage) or _secret_variables(stage):
        return True
    return bool(_UPLOAD_FLAG.search(stage) and _CREDENTIAL_FILE.search(stage))


def _exfiltration(line: str) -> bool:
    if _PY_ENVIRON.search(line) and _PY_SEND.search(line):
        return True
    stages = _stages(line)
    for i, stage in enumerate(stages):
        words = {w.strip(_QUOTES).rsplit("/", 1)[-1] for w in stage.split()}
        if not words & _SENDERS:  # any word: prose may lead into the command
            continue
        if (i and _feeds_secrets(stages[i - 1])) or _sends_secrets(stage):
            return True
    return False


_RULES: Final = (
    (DOWNLOAD_EXEC, _download_exec),
    (DECODE_EXEC, _decode_exec),
    (REVERSE_SHELL, _reverse_shell),
    (EXFILTRATION, _exfiltration),
)


def _found(texts: Iterable[str]) -> Counter[tuple[str, str]]:
    """Each dangerous line (kind, the line with its whitespace collapsed), counted."""
    found: Counter[tuple[str, str]] = Counter()
    for text in texts:
        for line in _lines(text):
            for kind, rule in _RULES:
                if rule(line):
                    found[kind, " ".join(line.split())] += 1
    return found


def find_directives(text: str) -> list[str]:
    """The kinds of dangerous directive in `text`, each once, in rule order."""
    kinds = {kind for kind, _ in _found([text])}
    return [kind for kind, _ in _RULES if kind in kinds]


def gained(before: Iterable[str], after: Iterable[str]) -> list[str]:
    """The kinds of dangerous directive `after` holds more often than `before` (a line
    kept as it was is no gain; a new or changed one is), each once, in rule order."""
    new = _found(after) - _found(before)
    kinds = {kind for kind, _ in new}
    return [kind for kind, _ in _RULES if kind in kinds]
