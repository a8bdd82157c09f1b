"""Hostile inputs for the pure scanners, built at any size: the unit tests use them at one
size for what the scanners answer, `bench.pathological` times them at two sizes to show
the cost grows linearly (tests never assert timings; see docs/performance.md)."""

from __future__ import annotations

from reflection.constants import MAX_LLM_REPLY_CHARS


def secret_shapes(n: int) -> dict[str, str]:
    """Shapes of about `n` characters on which earlier rules of `reflection.secrets` grew
    with the square or the cube of the run."""
    return {
        "keyword + spaces": "password" + " " * n,
        "memory body + spaces": "Deploy notes. token" + " " * n,
        "cloud keyword + spaces": "cloudant_password" + " " * n,
        "keyword + equals": "token" + "=" * n,
        "keyword + colons": "password" + ":" * n,
        "keyword + quotes": "api_key" + "'\"" * (n // 2),
        "url fragments": "a://:" * (n // 5),
        "scheme characters": "a+" * (n // 2),
        "jwt prefixes": "eyJ" * (n // 3),
        "jwt prefixes after =": "=eyJ" * (n // 4),
        "sk- prefixes": "sk-" * (n // 3),
        "slashes": "//" * (n // 2),
        "pem header lines": "-----BEGIN PRIVATE KEY-----" + "\nts: " * (n // 5),
        "pem begins with headers": "-----BEGIN PRIVATE KEY-----\nts: " * (n // 32),
        "assignments on one line": "password=abcdefg " * (n // 17),
        # The rules added for issue 22: vendor prefixes, command lines, headers, settings.
        "vendor prefixes": "sk_live_" * (n // 8),
        "vault prefixes": "hvs." * (n // 8) + "s." * (n // 4),
        "fixed-length keys run together": "AKIA" * (n // 4),
        "token middles": ("a" * 14 + ".atlasv1.") * (n // 46) + "1Q~" * (n // 6),
        "commands on one line": "curl -u " * (n // 16) + "mysql -p" * (n // 16),
        "commands on continued lines": "docker \\\n" * (n // 9),
        "long option names": "--" + "pass-" * (n // 5),
        "long options": "--password " * (n // 11),
        "echo pipes": "echo x | " * (n // 9),
        "htpasswd arguments": "htpasswd " * (n // 9),
        "authorization headers": "authorization: " * (n // 15),
        "cookie headers on one line": "cookie: a=b; " * (n // 13),
        "query parameters": "?token=" * (n // 7),
        "key settings": "a_key: " * (n // 7),
        "netrc machines": "machine x " * (n // 10),
        "key prose": "the key is " * (n // 11),
        "public pem blocks": "-----BEGIN CERTIFICATE-----" * (n // 27),
        "pem in a json string": "-----BEGIN PRIVATE KEY-----" + "\\n" * (n // 2),
        "equals before tokens": "=a" * (n // 2),
        "inline passwords": "-U a%" * (n // 10) + "-pass pass:" * (n // 22),
    }


def directive_lines(n: int) -> dict[str, str]:
    """One long line each (about 5 `n` characters, over the largest piece) on which a rule
    of `reflection.directives` that rescanned the rest of the line from every match would
    grow with its square."""
    return {
        "curls": "curl " * n,
        "options": "curl -a " * n + "| sh",
        "vars": "$AWS_SECRET " * n,
        "curl-vars": "curl " + "$TOKEN_X " * n,
        "substitutions": "sh $( " * n,
        "pipes": "| " * (n * 5 // 2),
        "decodes": "base64 -d " * n,
    }


def reply_texts(n: int = MAX_LLM_REPLY_CHARS) -> dict[str, str]:
    """Replies of just under `n` characters that are no decision, shaped to make a naive
    scanner (a retry from every brace, a fence search from every fence) quadratic."""
    return {
        "open-braces": "{" * (n - 1),
        "escaped-quotes": '"\\' * (n // 2 - 1),
        "fences": "```json\n" * (n // 8 - 1),
        "empty-objects": "{}" * (n // 2 - 1),
        "prose": "x" * (n - 1),
    }
