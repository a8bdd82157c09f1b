"""The stream's report: per-user figures, the targets of SPEC §11 judged, a table, JSON
and an SVG plot (written by hand: no plotting dependency). Pure apart from `write_svg`.

Targets, for the rules-on run (issue 21, item 5):
- plateau: each user's live entries at the end at most 1.5x those at the checkpoint
  (job 100 of 300);
- duplicates: duplicate pairs at the end at most 5 % of the rules-off run's;
- stale: stale entries at the end at most 10 % of live entries;
- trust: no live instruction entry whose only support is untrusted.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from html import escape
from pathlib import Path
from statistics import mean
from typing import Any, Final

from reflection.evals.stream.runner import ModeResult, checkpoint

PLATEAU_MAX: Final = 1.5
DUPLICATES_MAX: Final = 0.05  # of the rules-off count
STALE_MAX: Final = 0.10  # of live entries


@dataclass(frozen=True)
class UserRow:
    mode: str
    user: int
    live_early: int  # at the checkpoint
    live_end: int
    duplicate_pairs: int
    stale: int
    untrusted_instructions: int
    tokens_per_job: int  # mean prompt tokens of the user's jobs in the stream's last third

    @property
    def growth(self) -> float | None:
        return None if not self.live_early else self.live_end / self.live_early


@dataclass(frozen=True)
class Target:
    name: str
    passed: bool
    detail: str


def user_rows(result: ModeResult, jobs: int) -> list[UserRow]:
    early = {s.user: s for s in result.at(checkpoint(jobs))}
    late = [t for n, _, t in result.tokens if n > jobs - max(1, jobs // 3)]
    rows = []
    for s in sorted(result.at(jobs), key=lambda s: s.user):
        mine = [t for n, u, t in result.tokens if u == s.user and n > jobs - max(1, jobs // 3)]
        rows.append(
            UserRow(
                mode=result.mode,
                user=s.user,
                live_early=early[s.user].live,
                live_end=s.live,
                duplicate_pairs=s.duplicate_pairs,
                stale=s.stale,
                untrusted_instructions=s.untrusted_instructions,
                tokens_per_job=round(mean(mine or late or [0])),
            )
        )
    return rows


def _total(rows: Sequence[UserRow], field: str) -> int:
    return sum(int(getattr(r, field)) for r in rows)


def targets(off: Sequence[UserRow], on: Sequence[UserRow]) -> list[Target]:
    """The four targets, judged on the rules-on rows (duplicates against rules off)."""
    flat = [r for r in on if r.growth is not None and r.growth > PLATEAU_MAX]
    growths = ", ".join(f"u{r.user} {r.growth:.2f}x" for r in on if r.growth is not None)
    dup_off, dup_on = _total(off, "duplicate_pairs"), _total(on, "duplicate_pairs")
    live, stale = _total(on, "live_end"), _total(on, "stale")
    untrusted = _total(on, "untrusted_instructions")
    return [
        Target(
            "plateau",
            not flat and all(r.growth is not None for r in on),
            f"live entries at the end / at the checkpoint: {growths} (at most {PLATEAU_MAX}x)",
        ),
        Target(
            "duplicates",
            dup_on <= DUPLICATES_MAX * dup_off,
            f"{dup_on} duplicate pairs with the rules on, {dup_off} off "
            f"(at most {DUPLICATES_MAX:.0%} of off: {DUPLICATES_MAX * dup_off:.1f})",
        ),
        Target(
            "stale",
            stale <= STALE_MAX * live,
            f"{stale} stale of {live} live entries (at most {STALE_MAX:.0%})",
        ),
        Target("trust", untrusted == 0, f"{untrusted} instruction entries only a page supports"),
    ]


def build(config: dict[str, Any], off: ModeResult | None, on: ModeResult | None) -> dict[str, Any]:
    """The report as JSON data: config, each run's rows, counts and series, targets."""
    jobs = int(config["jobs"])
    runs: dict[str, Any] = {}
    rows: dict[str, list[UserRow]] = {}
    for result in (off, on):
        if result is None:
            continue
        rows[result.mode] = user_rows(result, jobs)
        runs[result.mode] = {
            "rules": result.rules,
            "users": [asdict(r) for r in rows[result.mode]],
            "outcomes": dict(sorted(result.outcomes.items())),
            "refused": dict(sorted(result.refused.items())),
            "near_duplicate_distinct": result.distinct_refused,
            "consolidations": dict(sorted(result.consolidations.items())),
            "samples": [asdict(s) for s in result.samples],
            "tokens": [list(t) for t in result.tokens],
        }
    report: dict[str, Any] = {"config": config | {"checkpoint": checkpoint(jobs)}, "runs": runs}
    if "off" in rows and "on" in rows:
        report["targets"] = [asdict(t) for t in targets(rows["off"], rows["on"])]
    return report


COLUMNS: Final = (
    "rules",
    "user",
    "live @cp",
    "live @end",
    "growth",
    "dup pairs",
    "stale",
    "untrusted instr.",
    "prompt tokens/job",
)


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per run and user, then a total per run."""
    out = []
    for mode, run in report["runs"].items():
        users = run["users"]
        for r in users:
            growth = "—" if not r["live_early"] else f"{r['live_end'] / r['live_early']:.2f}x"
            out.append(
                [
                    mode,
                    f"u{r['user']}",
                    str(r["live_early"]),
                    str(r["live_end"]),
                    growth,
                    str(r["duplicate_pairs"]),
                    str(r["stale"]),
                    str(r["untrusted_instructions"]),
                    str(r["tokens_per_job"]),
                ]
            )
        tot = {
            k: sum(r[k] for r in users)
            for k in (
                "live_early",
                "live_end",
                "duplicate_pairs",
                "stale",
                "untrusted_instructions",
            )
        }
        growth = "—" if not tot["live_early"] else f"{tot['live_end'] / tot['live_early']:.2f}x"
        tokens = round(mean(r["tokens_per_job"] for r in users)) if users else 0
        out.append(
            [
                mode,
                "all",
                str(tot["live_early"]),
                str(tot["live_end"]),
                growth,
                str(tot["duplicate_pairs"]),
                str(tot["stale"]),
                str(tot["untrusted_instructions"]),
                str(tokens),
            ]
        )
    return out


def markdown(report: dict[str, Any]) -> str:
    """The table and the targets as Markdown (what the README holds)."""
    cols = [c.replace("@cp", f"@{report['config']['checkpoint']}") for c in COLUMNS]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(report)]
    if report.get("targets"):
        lines.append("")
    for t in report.get("targets", []):
        mark = "met" if t["passed"] else "MISSED"
        lines.append(f"- **{t['name']}** {mark}: {t['detail']}")
    return "\n".join(lines) + "\n"


# The plot.

_COLORS: Final = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")
_W, _H, _PAD = 330, 240, 44


def _series(samples: Sequence[dict[str, Any]], user: int, key: str) -> list[tuple[float, float]]:
    return [(s["job"], s[key]) for s in samples if s["user"] == user]


def _tokens(
    tokens: Sequence[Sequence[int]], user: int, window: int = 5
) -> list[tuple[float, float]]:
    mine = [(n, t) for n, u, t in tokens if u == user]
    return [
        (n, mean(t for _, t in mine[max(0, i - window + 1) : i + 1]))
        for i, (n, _) in enumerate(mine)
    ]


def _panel(
    title: str, x0: int, lines: list[tuple[list[tuple[float, float]], str, bool]], jobs: int
) -> list[str]:
    top = max([y for pts, _, _ in lines for _, y in pts] + [1.0])
    pw, ph = _W - _PAD - 10, _H - _PAD - 26

    def xy(x: float, y: float) -> str:
        return f"{x0 + _PAD + x / max(jobs, 1) * pw:.1f},{26 + ph - y / top * ph:.1f}"

    out = [
        f'<text x="{x0 + _W / 2}" y="16" text-anchor="middle" font-weight="bold">'
        f"{escape(title)}</text>",
        f'<rect x="{x0 + _PAD}" y="26" width="{pw}" height="{ph}" fill="none" stroke="#999"/>',
        f'<text x="{x0 + _PAD - 4}" y="30" text-anchor="end">{top:.0f}</text>',
        f'<text x="{x0 + _PAD - 4}" y="{26 + ph}" text-anchor="end">0</text>',
        f'<text x="{x0 + _PAD + pw}" y="{26 + ph + 14}" text-anchor="end">job {jobs}</text>',
        f'<text x="{x0 + _PAD}" y="{26 + ph + 14}">job 0</text>',
    ]
    for pts, color, dashed in lines:
        if pts:
            dash = ' stroke-dasharray="4 3"' if dashed else ""
            path = " ".join(xy(x, y) for x, y in pts)
            out.append(
                f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.5"{dash}/>'
            )
    return out


def svg(report: dict[str, Any]) -> str:
    """Three panels over the stream, per user: live entries, duplicate pairs, prompt
    tokens per job (a moving average of five); rules off dashed, on solid."""
    jobs = int(report["config"]["jobs"])
    users = int(report["config"]["users"])
    panels: dict[str, list[tuple[list[tuple[float, float]], str, bool]]] = {
        "live entries": [],
        "duplicate pairs": [],
        "prompt tokens per job": [],
    }
    for mode, run in report["runs"].items():
        for u in range(users):
            color, dashed = _COLORS[u % len(_COLORS)], mode == "off"
            panels["live entries"].append((_series(run["samples"], u, "live"), color, dashed))
            panels["duplicate pairs"].append(
                (_series(run["samples"], u, "duplicate_pairs"), color, dashed)
            )
            panels["prompt tokens per job"].append((_tokens(run["tokens"], u), color, dashed))
    width = _W * len(panels)
    body = []
    for i, (title, lines) in enumerate(panels.items()):
        body += _panel(title, i * _W, lines, jobs)
    legend_y = _H + 6
    body.append(
        f'<text x="{_PAD}" y="{legend_y}">'
        "dashed: rules off · solid: rules on · one colour per user "
        f"(seed {report['config']['seed']}, {jobs} jobs, {users} users, "
        f"{report['config']['days']} days)</text>"
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{_H + 14}" '
        f'font-family="sans-serif" font-size="11">\n'
        f'<rect width="100%" height="100%" fill="white"/>\n' + "\n".join(body) + "\n</svg>\n"
    )


def write_svg(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(svg(report), encoding="utf-8")


def write_json(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
