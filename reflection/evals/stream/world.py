"""The simulated world: users, the facts their jobs teach, and the jobs themselves.

Pure and deterministic: `build_world(seed, ...)` gives the same world for the same
arguments, in any process. A user has a dozen facts of their own (how they want to work,
who they are: `CORE`), relied on again and again, and works on one project at a time
(`PROJECT` facts of a service), for a phase of five to eight weeks; a project fact is
true, and shown by jobs, only during its phase, then goes stale. Now and then a job
fetches a page that holds an instruction for AI agents (`PLANTED`).

Nothing here knows the worker: ids are given to the world by the runner.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

from reflection.evals.stream import catalog as cat
from reflection.models import MemoryType

START: Final = datetime(2026, 1, 5, tzinfo=UTC)

# How a careless model behaves (SPEC §11: "on about a third of jobs it adds a paraphrase
# of what memory already holds, now and then it cites a fetched page for an instruction").
PARAPHRASE_RATE: Final = 1 / 3
PLANTED_RATE: Final = 0.08
MISQUOTE_RATE: Final = 0.04  # an add whose quote is not in the job (unsupported)
PHASE_DAYS: Final = (35.0, 56.0)
PROJECT_FACTS_PER_PHASE: Final = 3


@dataclass(frozen=True)
class Fact:
    """One thing a job can teach. `id` is stable across runs (`u<k>:<key>`)."""

    id: str
    user: int
    type: MemoryType
    names: tuple[str, ...]
    texts: tuple[tuple[str, str], ...]  # (description, body); [0] canonical, then paraphrases
    says: str  # the log line (without its stamp) that supports it
    planted: bool = False  # an instruction from a fetched page: never the user's word
    phase: int | None = None  # a project fact's phase; None for the user's own facts

    @property
    def instruction(self) -> bool:
        """Whether the fact tells agents how to work (`user`/`feedback`, SPEC §11)."""
        return self.type in ("user", "feedback")


@dataclass(frozen=True)
class SimJob:
    """One finished job: what the platform stored, and what it holds (ground truth)."""

    n: int  # 1-based position in the stream
    user: int
    at: datetime  # when it finished: the simulated clock of its reflection
    task: str
    result: str
    log: str
    topics: tuple[str, ...]  # the facts the job shows and relies on
    lines: dict[str, str] = field(default_factory=dict)  # fact id -> its log line (no stamp)
    planted: str | None = None  # a planted fact the fetched page holds
    careless: bool = False  # the model adds a paraphrase of a topic it already knows
    misquote: bool = False  # the model's first add quotes something not in the job

    @property
    def day(self) -> float:
        return (self.at - START).total_seconds() / 86400


@dataclass(frozen=True)
class World:
    seed: int
    days: int
    users: int
    facts: dict[str, Fact]
    jobs: tuple[SimJob, ...]

    def user_facts(self, user: int) -> list[Fact]:
        return [f for f in self.facts.values() if f.user == user]


def _fill(
    t: cat.Template, slots: dict[str, str]
) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...], str]:
    names = tuple(n.format(**slots) for n in t.names)
    texts = tuple((d.format(**slots), b.format(**slots)) for d, b in t.texts)
    return names, texts, t.says.format(**slots)


def _core_facts(rng: random.Random, user: int) -> list[Fact]:
    facts = []
    for t in cat.CORE:
        names, texts, says = _fill(t, rng.choice(t.slots))
        facts.append(Fact(f"u{user}:{t.key}", user, t.type, names, texts, says))
    return facts


def _phase_slots(rng: random.Random, svc: str) -> dict[str, str]:
    return {
        "svc": svc,
        "region": rng.choice(cat.REGIONS),
        "team": rng.choice(cat.TEAMS),
        "port": str(rng.randint(8000, 9999)),
        "n": str(rng.randint(10, 59)),
        "db": rng.choice(cat.DATABASES),
        "ci": rng.choice(cat.CI),
        "q": rng.choice(cat.QUEUES),
    }


@dataclass(frozen=True)
class Phase:
    start: float  # day
    end: float
    service: str
    facts: tuple[str, ...]


def _phases(rng: random.Random, user: int, days: int) -> tuple[list[Phase], list[Fact]]:
    """Back-to-back project phases over the stream; phase p draws its facts from three
    templates that the phases around it do not use (so that two live project facts of one
    kind are rare: the near-duplicate measure confuses them, SPEC §14)."""
    services = rng.sample(cat.SERVICES, len(cat.SERVICES))
    phases, facts, t, p = [], [], -rng.uniform(0, 20), 0
    while t < days:
        end = t + rng.uniform(*PHASE_DAYS)
        svc = services[p % len(services)]
        slots = _phase_slots(rng, svc)
        ids = []
        for i in range(PROJECT_FACTS_PER_PHASE):
            tpl = cat.PROJECT[(PROJECT_FACTS_PER_PHASE * p + i) % len(cat.PROJECT)]
            names, texts, says = _fill(tpl, slots)
            fid = f"u{user}:p{p}:{tpl.key}"
            facts.append(Fact(fid, user, tpl.type, names, texts, says, phase=p))
            ids.append(fid)
        phases.append(Phase(max(t, 0.0), end, svc, tuple(ids)))
        t, p = end, p + 1
    return phases, facts


def _planted_facts(user: int) -> list[Fact]:
    return [
        Fact(
            f"u{user}:planted:{p.name}",
            user,
            "feedback",
            (p.name,),
            ((p.description, p.body),),
            p.page_line,
            planted=True,
        )
        for p in cat.PLANTED
    ]


def _stamp(second: int) -> str:
    return f"[00:{second // 60:02d}:{second % 60:02d}]"


def _log(lines: list[str]) -> str:
    return "".join(f"{_stamp(7 * i + 1)} {line}\n" for i, line in enumerate(lines))


@dataclass
class _UserPlan:
    core: list[Fact]
    phases: list[Phase]
    planted: list[Fact]

    def phase_at(self, day: float) -> Phase | None:
        return next((p for p in self.phases if p.start <= day < p.end), None)


def _job(
    rng: random.Random, n: int, user: int, at: datetime, plan: _UserPlan, facts: dict[str, Fact]
) -> SimJob:
    day = (at - START).total_seconds() / 86400
    phase = plan.phase_at(day)
    svc = phase.service if phase else "platform"
    topics = [f.id for f in rng.sample(plan.core, 2)]
    if phase is not None:
        topics.append(rng.choice(phase.facts))
    task = rng.choice(cat.TASKS).format(svc=svc)
    lines = ["movement=plan persona=planner", f"tool=Read path=services/{svc}/README.md"]
    lines += [facts[t].says for t in topics]
    planted = None
    if rng.random() < PLANTED_RATE:
        planted = rng.choice(plan.planted).id
        lines += [f"tool=WebFetch url=https://devtools-mirror.example/{svc} status=200"]
        lines += [facts[planted].says]
    lines += [f"tool=Edit path=services/{svc}/app.py", "job succeeded"]
    shown = {t: facts[t].says for t in topics}
    if planted:
        shown[planted] = facts[planted].says
    return SimJob(
        n=n,
        user=user,
        at=at,
        task=task,
        result=f"Done: {task[0].lower()}{task[1:]}; the tests pass.",
        log=_log(lines),
        topics=tuple(topics),
        lines=shown,
        planted=planted,
        careless=rng.random() < PARAPHRASE_RATE,
        misquote=rng.random() < MISQUOTE_RATE,
    )


def build_world(*, seed: int, jobs: int, users: int, days: int) -> World:
    """The world of one stream: `jobs` jobs of `users` users over `days` days."""
    rng = random.Random(f"reflection-stream:{seed}")
    plans, facts = [], {}
    for u in range(users):
        core = _core_facts(rng, u)
        phases, project = _phases(rng, u, days)
        planted = _planted_facts(u)
        plans.append(_UserPlan(core, phases, planted))
        facts.update({f.id: f for f in (*core, *project, *planted)})
    seconds = sorted(rng.uniform(0, days * 86400) for _ in range(jobs))
    out = []
    for n, s in enumerate(seconds, start=1):
        user = rng.randrange(users)
        job_rng = random.Random(f"reflection-stream:{seed}:job:{n}")
        out.append(_job(job_rng, n, user, START + timedelta(seconds=s), plans[user], facts))
    return World(seed=seed, days=days, users=users, facts=facts, jobs=tuple(out))
