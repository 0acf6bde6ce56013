"""The stage graph engine: declared stages, requests, cache keys derived from declarations.

A **stage** is one expensive step (rendering an image set, training a classifier, sampling a
synthetic set, ...). It is declared once (the package :mod:`trcgl.stages` holds every declaration,
one module per domain; importing it fills :data:`REGISTRY`) with

- ``reads``: the config keys it may read (a section name allows all of that section's keys);
- ``inputs``: the upstream stages it needs, as :class:`Request` objects derived from the config
  and the request's parameters;
- ``modules``: the package modules whose code it runs;
- ``build(ctx)``: writes the artifact's files into ``ctx.work``; ``load(ctx)`` reads them back.

A :class:`Request` names a stage, a configuration and parameters (plain values, or other
requests: those are inputs too). Its cache key is :func:`trcgl.cache.digest` of exactly

    {stage, version, the declared config values (options at their neutral value left out),
     the plain parameters, every input artifact's content digest, the digest of the modules' source}

so nothing else can change a key and nothing a stage depends on can be missed: the stage sees
its configuration through a view that raises on any undeclared key (:meth:`Config.restrict`),
and an input's digest is the SHA-256 manifest of its files, so editing the phantom renderer
recomputes the image sets, and everything downstream only where the pixels really changed.

:class:`Runner` resolves requests depth-first (each at most once per process), through the
locked, verified :class:`~trcgl.cache.ArtifactCache`, and keeps a ledger of what it resolved:
executed chapters record it, and ``check-book`` compares it with the current keys.

**Several processes** (``accelerate launch -m trcgl run STAGE``): every process runs the same
resolution. A stage declared ``together`` (the trainers: classifier, vae, prompt-diffusion,
normal-dit) is built by all of them in one :meth:`~trcgl.cache.ArtifactCache.fetch` call: the
main process alone takes the lock and decides, all train in the same ``.partial`` folder, the main
process writes and seals. Any other stage is built by one process under the lock while the
others wait on it, then load it. The number of processes does not enter the keys: it changes
the numbers only within float tolerance (the device type, cpu or cuda, does enter them).
"""
from __future__ import annotations

import importlib.util
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from .cache import ArtifactCache, Busy, digest, file_sha256
from .config import Config, neutral_values
from .errors import TrcglError

log = logging.getLogger(__name__)


class StageError(TrcglError):
    """An unknown stage, a bad request, or an artifact that cannot be resolved."""


class Missing(StageError):
    """A dry resolution met a stage whose artifact is not in the cache."""


# ----------------------------------------------------------------------------- declarations

@dataclass(frozen=True)
class Stage:
    name: str
    build: Callable[["Context"], None]
    load: Callable[["Context"], Any]
    reads: tuple[str, ...] | Callable[[Mapping[str, Any]], tuple[str, ...]]
    modules: tuple[str, ...]
    inputs: Callable[[Config, Mapping[str, Any]], Mapping[str, "Request | None"]] | None = None
    version: int = 1
    doc: str = ""
    together: bool = False      # under a launcher, every process takes part in ``build`` (a trainer)

    def reads_for(self, params: Mapping[str, Any]) -> tuple[str, ...]:
        return tuple(self.reads(params) if callable(self.reads) else self.reads)


REGISTRY: dict[str, Stage] = {}


def stage(name: str, *, reads, modules, load, inputs=None, version: int = 1, together: bool = False):
    """Decorator: register ``build`` as the stage ``name`` (see :class:`Stage`)."""
    def register(build):
        if name in REGISTRY:
            raise StageError(f"stage '{name}' is declared twice")
        REGISTRY[name] = Stage(name, build, load, reads if callable(reads) else tuple(reads), tuple(modules),
                               inputs, version, (build.__doc__ or "").strip(), together)
        return build
    return register


def get_stage(name: str) -> Stage:
    """The declaration of stage ``name``. The book's stages are declared by importing
    :mod:`trcgl.stages` (as the command line, the chapters' views and the tests do); this engine
    never imports them itself: it is the lower layer."""
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY)) or "none: import trcgl.stages to declare the book's stages"
        raise StageError(f"unknown stage '{name}' (known: {known})") from None


# ----------------------------------------------------------------------------- requests

class Const:
    """An in-memory input (tests, interactive use): a value with a content digest."""

    def __init__(self, value: Any, key: str):
        self.value, self.key = value, key

    def __repr__(self) -> str:
        return f"Const({type(self.value).__name__}, {self.key})"


class Request:
    """A stage, the configuration it runs under, and its parameters (plain values or inputs)."""

    def __init__(self, stage_name: str, cfg: Config, **params: Any):
        if not isinstance(cfg, Config):
            raise StageError(f"a request for '{stage_name}' needs a Config, got {type(cfg).__name__}")
        self.stage, self.cfg, self.params = stage_name, cfg.unrestricted(), params

    def __repr__(self) -> str:
        plain = {k: v for k, v in self.params.items() if not isinstance(v, (Request, Const))}
        return f"Request({self.stage}, {plain})"


@dataclass
class Context:
    """What a stage's ``build`` and ``load`` see."""

    cfg: Config                     # a view of the declared keys only
    params: dict                    # the plain parameters
    inputs: Mapping                 # name -> value of each input (None where none), loaded when first read
    work: Path                      # the folder to write into (build) or read from (load)
    artifacts: dict = field(default_factory=dict)   # name -> Artifact of each input
    stage: str = ""
    key: str = ""


class InputValues(Mapping):
    """A stage's inputs by name, each loaded when first read (a stage that needs only a file of an
    input, e.g. a classifier's selection probabilities, never loads the rest of it)."""

    def __init__(self, artifacts: Mapping[str, "Artifact | None"]):
        self._artifacts = artifacts

    def __getitem__(self, name: str) -> Any:
        art = self._artifacts[name]
        return art.value if art is not None else None

    def __iter__(self):
        return iter(self._artifacts)

    def __len__(self) -> int:
        return len(self._artifacts)


@dataclass
class Artifact:
    stage: str
    key: str
    digest: str
    folder: Path | None
    computed: bool
    _value: Any = None
    _loader: Callable[[], Any] | None = None

    @property
    def value(self) -> Any:
        if self._loader is not None:
            self._value, self._loader = self._loader(), None
        return self._value


def code_digest(modules) -> str:
    """Digest of the source of ``modules`` (a package stands for all its ``.py`` files)."""
    return digest([_module_sources(m) for m in sorted(modules)])


_SOURCE_CACHE: dict[str, list] = {}


def _module_sources(name: str) -> list:
    """(file, sha256) of a module's source: a package stands for all its ``.py`` files; a name
    with a slash is a data file of the package (``data/locations.json``)."""
    if name not in _SOURCE_CACHE:
        if "/" in name:
            path = Path(__file__).parent / name
            if not path.is_file():
                raise StageError(f"a stage declares data file '{name}', which does not exist")
            _SOURCE_CACHE[name] = [(name, file_sha256(path))]
            return _SOURCE_CACHE[name]
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise StageError(f"a stage declares module '{name}', which does not exist")
        origin = Path(spec.origin)
        files = sorted(origin.parent.rglob("*.py")) if origin.name == "__init__.py" else [origin]
        _SOURCE_CACHE[name] = [(f.relative_to(origin.parent).as_posix(), file_sha256(f)) for f in files]
    return _SOURCE_CACHE[name]


def key_config(cfg: Config, reads) -> dict[str, Any]:
    """The declared config values that enter a key: every leaf under ``reads``, minus options at
    their neutral value; ``device`` enters as the device actually used (cpu or cuda)."""
    values = cfg.leaves(reads)
    neutral = neutral_values()
    out = {k: v for k, v in values.items() if not (k in neutral and neutral[k] == v)}
    if "device" in out:
        from .runtime import select_device

        out["device"] = select_device(out["device"]).type
    return out


# ----------------------------------------------------------------------------- resolution

@dataclass
class LedgerEntry:
    stage: str
    key: str
    digest: str
    computed: bool
    seconds: float


class Runner:
    """Resolves requests through the cache: each at most once per process."""

    def __init__(self, cache: ArtifactCache | None = None, dry: bool = False):
        self.cache = cache or ArtifactCache()
        self.dry = dry
        self._memo: dict[str, Artifact] = {}
        self._identities: dict[int, tuple[Request, str]] = {}
        self.ledger: list[LedgerEntry] = []
        self.wait = True    # False: a stage another process is computing raises cache.Busy (run --workers)

    def _inputs(self, req: Request) -> tuple[dict, dict]:
        """(plain parameters, every input: Request-valued parameters and derived ones)."""
        st = get_stage(req.stage)
        plain, nested = _split_params(req.params)
        derived = {k: v for k, v in (st.inputs(req.cfg, plain) if st.inputs else {}).items() if k not in nested}
        return plain, {**derived, **nested}     # an input given as a parameter replaces the derived one

    def identity(self, req: Request) -> str:
        """What tells two requests apart before anything is computed (the memo key): the stage,
        its declared config values, plain parameters and its inputs' identities."""
        return self._identity(req)

    def _identity(self, req: Request) -> str:
        known = self._identities.get(id(req))
        if known is not None and known[0] is req:
            return known[1]
        st = get_stage(req.stage)
        plain, inputs = self._inputs(req)
        ident = digest(req.stage, key_config(req.cfg, st.reads_for(plain)), plain,
                       {k: (self._identity(v) if isinstance(v, Request) else v.key if isinstance(v, Const) else None)
                        for k, v in inputs.items()})
        self._identities[id(req)] = (req, ident)     # the request is kept, so its id is not reused
        return ident

    def resolve(self, req: Request) -> Artifact:
        """The artifact of ``req``: from the cache, or computed (its inputs first)."""
        ident = self._identity(req)
        if ident in self._memo:
            return self._memo[ident]
        st = get_stage(req.stage)
        plain, inputs = self._inputs(req)
        arts, busy = {}, None
        for name, v in inputs.items():
            try:
                arts[name] = self._input(v)
            except Busy as err:      # computed elsewhere right now: resolve the other inputs first
                busy = busy or err
        if busy is not None:
            raise busy
        reads = st.reads_for(plain)
        payload = _payload(st, req, plain, {n: (a.digest if a is not None else None) for n, a in arts.items()})
        key = self.cache.key(payload)
        view = req.cfg.restrict(reads, owner=f"stage '{st.name}'")

        def context(folder: Path) -> Context:
            return Context(view, dict(plain), InputValues(arts), folder, arts, st.name, key)

        final = self.cache.path(st.name, payload)
        if self.dry:
            meta = self.cache.meta(final) if (final / "meta.json").is_file() else None
            if meta is None:
                raise Missing(f"stage {st.name}/{key} is not in the cache")
            art = Artifact(st.name, key, meta["digest"], final, False)
        else:
            start = time.perf_counter()
            group = None
            if st.together:
                from .runtime import processes

                group = processes()
            folder, computed = self.cache.fetch(st.name, payload, lambda work: st.build(context(work)), group=group,
                                                wait=self.wait)
            seconds = time.perf_counter() - start
            log.info("stage %s/%s: %s (%.1f s)", st.name, key, "computed" if computed else "cached", seconds)
            meta = self.cache.verify(folder)
            art = Artifact(st.name, key, meta["digest"], folder, computed, _loader=lambda: st.load(context(folder)))
        entry = LedgerEntry(st.name, key, art.digest, art.computed, 0.0 if self.dry else round(seconds, 2))
        self.ledger.append(entry)
        _record(entry, self.dry)
        self._memo[ident] = art
        return art

    def _input(self, v) -> Artifact | None:
        if v is None:
            return None
        if isinstance(v, Const):
            return Artifact("const", v.key, v.key, None, False, v.value)
        if isinstance(v, Request):
            return self.resolve(v)
        raise StageError(f"an input must be a Request, a Const or None, got {type(v).__name__}")

    def value(self, req: Request) -> Any:
        return self.resolve(req).value

    def upstream(self, req: Request) -> list[Request]:
        """Every request ``req`` depends on, transitively (nothing is resolved)."""
        out, todo = [], [req]
        while todo:
            _, inputs = self._inputs(todo.pop())
            for v in inputs.values():
                if isinstance(v, Request):
                    out.append(v)
                    todo.append(v)
        return out

    def plan(self, requests) -> list["PlanEntry"]:
        """Every request that ``requests`` need, each once, inputs before what uses them, with
        whether its artifact is already in the cache; nothing is computed or loaded. (A request
        counts as cached when all its inputs are and its key's folder is finished; an input that
        must be computed leaves its users' keys unknown, so they count as to compute.)"""
        entries: dict[str, PlanEntry] = {}

        def visit(req: Request) -> PlanEntry:
            ident = self._identity(req)
            if ident in entries:
                return entries[ident]
            st = get_stage(req.stage)
            plain, inputs = self._inputs(req)
            digests: dict[str, str | None] = {}
            known = True
            for name, v in inputs.items():
                if isinstance(v, Request):
                    sub = visit(v)
                    digests[name] = sub.digest
                    known = known and sub.digest is not None
                else:
                    digests[name] = v.key if isinstance(v, Const) else None
            found = None
            if known:
                final = self.cache.path(st.name, _payload(st, req, plain, digests))
                if (final / "meta.json").is_file():
                    found = self.cache.meta(final)["digest"]
            entries[ident] = PlanEntry(st.name, req, ident, found is not None, found)
            return entries[ident]

        for req in requests:
            visit(req)
        return list(entries.values())


@dataclass
class PlanEntry:
    """One request of a :meth:`Runner.plan`: its stage, the request, its identity, and whether
    its artifact is cached (then ``digest`` is the artifact's content digest)."""

    stage: str
    request: Request
    identity: str
    cached: bool
    digest: str | None = None


def _payload(st: Stage, req: Request, plain: Mapping[str, Any], input_digests: Mapping[str, str | None]) -> dict:
    """What a request's cache key is the digest of (see the module docstring)."""
    return {"stage": st.name, "version": st.version, "config": key_config(req.cfg, st.reads_for(plain)),
            "params": plain, "inputs": dict(input_digests), "code": code_digest(st.modules)}


LEDGER_ENV = "TRCGL_LEDGER"


def _record(entry: LedgerEntry, dry: bool) -> None:
    """Append a resolution to the file ``$TRCGL_LEDGER`` names (set while a chapter executes, so
    the executed notebook can record which artifacts it showed)."""
    import json
    import os

    path = os.environ.get(LEDGER_ENV)
    if path and not dry:
        with open(path, "a") as fh:
            fh.write(json.dumps({"stage": entry.stage, "key": entry.key, "digest": entry.digest}) + "\n")


def _split_params(params: Mapping[str, Any]) -> tuple[dict, dict]:
    plain = {k: v for k, v in params.items() if not isinstance(v, (Request, Const))}
    nested = {k: v for k, v in params.items() if isinstance(v, (Request, Const))}
    return plain, nested


_DEFAULT: dict[Path, Runner] = {}


def runner(cache: ArtifactCache | None = None) -> Runner:
    """The process's runner for a cache (one per cache root, so memoisation is shared)."""
    cache = cache or ArtifactCache()
    if cache.root not in _DEFAULT:
        _DEFAULT[cache.root] = Runner(cache)
    elif _DEFAULT[cache.root].cache is not cache:
        _DEFAULT[cache.root].cache = cache
    return _DEFAULT[cache.root]


def resolve(req: Request, cache: ArtifactCache | None = None) -> Artifact:
    return runner(cache).resolve(req)


def value(req: Request, cache: ArtifactCache | None = None) -> Any:
    return runner(cache).resolve(req).value
