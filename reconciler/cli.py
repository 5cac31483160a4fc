"""The command line. Thin: parse arguments, load settings and specs, call the engine, print.

Data (plans, JSON, schemas) goes to stdout; logs and progress go to stderr.
Exit codes (README, "Exit codes"): 0 done or in sync; 1 an error (an invalid spec, a failed
spec, no spec found); 2 changes (diff) or a stale lock (lock --check); 64 a usage error (an
unknown command or option, a bad option value), a code no command uses for a result, so a typo
in a CI recipe never passes for "changes".
"""

from __future__ import annotations

import contextvars
import gc
import inspect
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from typer.core import TyperArgument, TyperGroup, TyperOption

from reconciler import __version__

# Start-up is paid by every run (docs/performance.md): the module imports typer and the
# standard library only, and each command imports what it uses, so `validate` never loads
# httpx or the engine, and no command but a terminal `apply` loads rich.
if TYPE_CHECKING:
    from collections.abc import Coroutine

    from reconciler.engine import RunReport
    from reconciler.lock import LockMode, LockReport
    from reconciler.resolve import Resolver
    from reconciler.settings import Settings
    from reconciler.spec import LoadedSpec, LoadResult

T = TypeVar("T")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2
EXIT_USAGE = 64  # sysexits.h's EX_USAGE: click's own 2 is diff's "changes"


class _Group(TyperGroup):
    """The command group, with usage errors (click's UsageError: an unknown command or option,
    a missing argument, a bad value) exiting EXIT_USAGE instead of click's 2. Parsing happens
    in make_context (the group's own options) and in invoke (the subcommand's)."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: Any = None,
        **extra: Any,
    ) -> Any:
        from typer._click.exceptions import UsageError

        try:
            return super().make_context(info_name, args, parent, **extra)
        except UsageError as exc:
            exc.exit_code = EXIT_USAGE
            raise

    def invoke(self, ctx: Any) -> Any:
        from typer._click.exceptions import UsageError

        try:
            return super().invoke(ctx)
        except UsageError as exc:
            exc.exit_code = EXIT_USAGE
            raise


def _quiet_help_types() -> None:
    """typer prints a type beside every parameter: `<bool>` beside each flag (and --help),
    `<list[Path]>` beside `paths...`. A flag takes no value and an argument's name says what
    it takes, so those columns stay empty; options with a value keep theirs (`<path>`)."""
    option_type = TyperOption.display_type_rich

    def option(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag else option_type(self, ctx)

    def argument(self: TyperArgument, ctx: Any) -> str | None:
        return None

    setattr(TyperOption, "display_type_rich", option)  # noqa: B010 (mypy: no method assignment)
    setattr(TyperArgument, "display_type_rich", argument)  # noqa: B010


_quiet_help_types()

app = typer.Typer(
    name="reconciler",
    cls=_Group,
    help="GitOps reconciler for container images: declare derived images in YAML, "
    "push only what is missing.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class Output(StrEnum):
    TEXT = "text"
    JSON = "json"
    MARKDOWN = "markdown"  # a pull-request comment (docs/ci.md)


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="Settings file (YAML). Also RECONCILER_CONFIG.",
        envvar="RECONCILER_CONFIG",
        show_envvar=False,
    ),
]
PathsArgument = Annotated[
    list[Path] | None,
    typer.Argument(
        help="Spec files or directories. Default: the configured specs_dir.", show_default=False
    ),
]
OutputOption = Annotated[Output, typer.Option("--output", "-o", help="text, json or markdown.")]

# `-v` before the command (`reconciler -v apply`) or after it (`reconciler apply -v`): the
# top-level callback sets it on every invocation, a command's own `-v` can only turn it on.
_verbose: contextvars.ContextVar[bool] = contextvars.ContextVar("verbose", default=False)


def _turn_verbose_on(value: bool) -> None:
    if value:
        _verbose.set(True)


VerboseOption = Annotated[
    bool,
    typer.Option(
        "--verbose",
        "-v",
        callback=_turn_verbose_on,
        expose_value=False,
        help="Log at DEBUG (each tag set, each request), whatever log_level says.",
    ),
]


# `--config` before the command (`reconciler --config s.yaml diff`) or after it: the
# top-level callback keeps its value here; a command's own --config wins.
_config: contextvars.ContextVar[Path | None] = contextvars.ContextVar("config", default=None)

AllowEmptyOption = Annotated[
    bool,
    typer.Option(
        "--allow-empty",
        help="Accept a specs directory with no spec (exit 0); without it that is an error.",
    ),
]


def _settings(config: Path | None, *, daemon: bool = False) -> Settings:
    """The settings; a bad value of a setting only the daemon reads fails `run` only."""
    from reconciler.errors import SettingsError
    from reconciler.logs import setup_logging
    from reconciler.settings import load_settings

    try:
        settings = load_settings(
            config if config is not None else _config.get(),
            daemon=daemon,
            log_level="debug" if _verbose.get() else None,
        )
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_ERROR) from None
    setup_logging(settings.log_level, settings.log_format)
    return settings


def _load(paths: list[Path] | None, settings: Settings, *, allow_empty: bool) -> LoadResult:
    """The specs of `paths` (default: specs_dir). Finding no spec file at all is an error
    naming where the path came from, unless allow_empty: in CI a wrong path must not pass
    for "nothing to do"."""
    from reconciler.spec import load_specs

    roots = paths or [settings.specs_dir]
    loaded = load_specs(roots)
    if loaded.files or (allow_empty and all(r.exists() for r in roots)):
        return loaded
    origin = _specs_origin(paths, settings)
    for root in roots:
        if not root.exists():
            typer.echo(f"error: {root}: no such file or directory ({origin})", err=True)
            raise typer.Exit(EXIT_ERROR)
    where = ", ".join(str(r) for r in roots)
    typer.echo(
        f"error: no spec file (*.yaml, *.yml) in {where} ({origin}); --allow-empty accepts that",
        err=True,
    )
    raise typer.Exit(EXIT_ERROR)


def _specs_origin(paths: list[Path] | None, settings: Settings) -> str:
    if paths:
        return "given as an argument"
    if os.environ.get("RECONCILER_SPECS_DIR"):
        return "from RECONCILER_SPECS_DIR"
    if "specs_dir" in settings.model_fields_set:
        return "specs_dir in the settings file"
    return "the default specs_dir; give a path, set specs_dir or RECONCILER_SPECS_DIR"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _run_async(work: Coroutine[Any, Any, T]) -> T:
    import asyncio  # not at the top: validate, schema and --help never need it

    return asyncio.run(work)


def _print_errors(loaded: LoadResult) -> None:
    for error in loaded.errors:
        typer.echo(f"error: {error}", err=True)


@app.command()
def validate(
    paths: PathsArgument = None,
    config: ConfigOption = None,
    verbose: VerboseOption = False,
    allow_empty: AllowEmptyOption = False,
) -> None:
    """Parse and check specs; no network. Exit 0 valid, 1 invalid or no spec found."""
    settings = _settings(config)
    loaded = _load(paths, settings, allow_empty=allow_empty)
    _print_errors(loaded)
    typer.echo(
        f"{_plural(len(loaded.specs), 'valid spec')} in {_plural(loaded.files, 'file')}; "
        f"{_plural(len(loaded.errors), 'error')}",
        err=True,
    )
    raise typer.Exit(EXIT_ERROR if loaded.errors else EXIT_OK)


def _run(loaded: LoadResult, settings: Settings, *, apply: bool) -> RunReport:
    from reconciler.engine import Engine, open_stores

    async def go() -> RunReport:
        async with open_stores(settings, one_shot=True) as stores:
            progress = _terminal_progress() if apply else None
            engine = Engine(settings, stores, progress, last_pass=True)
            try:
                return await engine.run(loaded, apply=apply)
            finally:
                if progress is not None:
                    progress.close()

    return _run_async(go())


def _reconcile(
    paths: list[Path] | None,
    output: Output,
    config: Path | None,
    *,
    apply: bool,
    allow_empty: bool,
) -> RunReport:
    """The shared body of diff and apply: load, run one pass, print the report on stdout."""
    from reconciler.render import render_json, render_markdown, render_text

    settings = _settings(config)
    report = _run(_load(paths, settings, allow_empty=allow_empty), settings, apply=apply)
    if output is Output.JSON:
        text = render_json(report)
    elif output is Output.MARKDOWN:
        text = render_markdown(report)
    else:
        text = render_text(report, verbose=_verbose.get())
    typer.echo(text, nl=False)
    return report


@app.command()
def diff(
    paths: PathsArgument = None,
    output: OutputOption = Output.TEXT,
    config: ConfigOption = None,
    verbose: VerboseOption = False,
    allow_empty: AllowEmptyOption = False,
) -> None:
    """Compare desired images with the registries. Exit 0 in sync, 2 changes, 1 error."""
    from reconciler.engine import SpecState

    report = _reconcile(paths, output, config, apply=False, allow_empty=allow_empty)
    if not report.ok:
        raise typer.Exit(EXIT_ERROR)
    raise typer.Exit(EXIT_CHANGES if report.count(SpecState.OUT_OF_SYNC) else EXIT_OK)


@app.command()
def apply(
    paths: PathsArgument = None,
    output: OutputOption = Output.TEXT,
    config: ConfigOption = None,
    verbose: VerboseOption = False,
    allow_empty: AllowEmptyOption = False,
) -> None:
    """Reconcile once: push missing blobs, manifests and tags. Exit 0 done, 1 any failure."""
    report = _reconcile(paths, output, config, apply=True, allow_empty=allow_empty)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_ERROR)


@app.command()
def lock(
    paths: Annotated[
        list[str] | None,
        typer.Argument(
            help="Spec files or directories (default: specs_dir); with --update, also the "
            "names of specs or base references whose entries move.",
            show_default=False,
        ),
    ] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Exit 2 if any entry is stale; write nothing.")
    ] = False,
    update: Annotated[
        bool, typer.Option("--update", help="Move entries to what their tags name now.")
    ] = False,
    config: ConfigOption = None,
    verbose: VerboseOption = False,
    allow_empty: AllowEmptyOption = False,
) -> None:
    """Pin base tags to digests in reconciler.lock, one per specs directory.

    Exit 0 done (or up to date), 2 stale (--check), 1 error."""
    from reconciler.lock import LockMode, describe

    if check and update:
        typer.echo("error: --check and --update do not go together", err=True)
        raise typer.Exit(EXIT_ERROR)
    settings = _settings(config)
    where = [Path(p) for p in paths or () if Path(p).exists()]
    names = [p for p in paths or () if not Path(p).exists()]
    if names and not update:
        typer.echo(f"error: no such file or directory: {', '.join(names)}", err=True)
        raise typer.Exit(EXIT_ERROR)
    loaded = _load(where or None, settings, allow_empty=allow_empty)
    _print_errors(loaded)
    mode = LockMode.CHECK if check else LockMode.UPDATE if update else LockMode.WRITE
    # Only a run that saw every spec of its directories may drop entries as unused.
    complete = not loaded.errors and all(p.is_dir() for p in where)
    report = _lock(loaded, settings, mode, names, complete)
    typer.echo("\n".join(describe(report, mode, Path.cwd())))
    if loaded.errors or report.errors:
        raise typer.Exit(EXIT_ERROR)
    raise typer.Exit(EXIT_CHANGES if check and report.stale else EXIT_OK)


def _lock(
    loaded: LoadResult, settings: Settings, mode: LockMode, names: list[str], complete: bool
) -> LockReport:
    from reconciler.cache import ContentCache
    from reconciler.engine import open_stores
    from reconciler.lock import Locker
    from reconciler.resolve import Resolver

    async def go() -> LockReport:
        async with open_stores(settings, one_shot=True) as stores:
            cache = ContentCache(settings.state_dir)
            resolver = Resolver(stores, cache, settings.max_uncompressed)
            return await Locker(resolver, complete=complete).run(loaded.specs, mode, names)

    return _run_async(go())


@app.command()
def run(config: ConfigOption = None, verbose: VerboseOption = False) -> None:
    """Run as a daemon: watch the specs directory, resync on an interval, serve /healthz,
    /readyz, /metrics and /status. Exits 0 on SIGTERM or SIGINT after in-flight work ends."""
    from reconciler.daemon.runner import run_daemon  # only the daemon needs watchdog & co.

    raise typer.Exit(run_daemon(_settings(config, daemon=True)))


@app.command()
def save(
    spec: Annotated[
        str,
        typer.Argument(
            metavar="SPEC",
            help="A spec file, or a spec's name in specs_dir (NAME[TAG]: one image of a "
            "fan-out spec).",
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="The archive to write.")],
    platform: Annotated[
        str | None,
        typer.Option(
            metavar="OS/ARCH",
            help="os/arch or os/arch/variant for manifest.json (default: the host's).",
        ),
    ] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option(metavar="NAME:TAG", help="A name for the loaded image (repeatable)."),
    ] = None,
    uncompressed_layers: Annotated[
        bool,
        typer.Option(
            "--uncompressed-layers", help="Plain tar layers for loaders that cannot read gzip."
        ),
    ] = False,
    config: ConfigOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Write a spec's desired image as a tar that docker load, podman load and skopeo read
    (OCI layout + manifest.json + repositories + legacy layer directories). Pushes nothing."""
    from reconciler.attach import KEYS, Attacher
    from reconciler.cache import ContentCache
    from reconciler.engine import open_stores, resolve_sources
    from reconciler.errors import ReconcilerError, SettingsError
    from reconciler.lockfile import LockSet
    from reconciler.model.desired import build_desired
    from reconciler.observe import Observer
    from reconciler.oci.platform import PlatformKey
    from reconciler.resolve import Resolver
    from reconciler.save import ArchiveWriter, SaveOptions, SaveResult
    from reconciler.trust.config import PolicySource
    from reconciler.verify import Verifier

    settings = _settings(config)
    name, _, instance = spec.removesuffix("]").partition("[")  # NAME[TAG]: one fan-out image
    loaded = _pick_spec(name if instance and not Path(spec).exists() else spec, settings)
    try:
        wanted = PlatformKey.parse(platform) if platform else None
        options = SaveOptions(wanted, tuple(tag or ()), uncompressed_layers)

        async def go() -> SaveResult:
            async with open_stores(settings, one_shot=True) as stores:
                cache = ContentCache(settings.state_dir)
                resolver = Resolver(stores, cache, settings.max_uncompressed, LockSet())
                one = await _instance(loaded, instance, resolver)
                try:
                    trust: PolicySource | SettingsError | None = settings.trust_source()
                except SettingsError as exc:  # fails only the specs it guards
                    trust = exc
                verifier = Verifier(stores, cache, resolver, trust)
                base, layers = await resolve_sources(one, resolver)
                await verifier.verify_sources(one, base, layers)
                desired = build_desired(one, base, layers)
                attacher = Attacher(stores, resolver, Observer(stores), cache, KEYS, None)
                beside = await attacher.for_archive(one, desired, base)
                return await ArchiveWriter(stores, cache).save(desired, output, options, beside)

        result = _run_async(go())
    except (ReconcilerError, ValueError, OSError) as exc:
        typer.echo(f"error: {loaded.file}: {exc}", err=True)
        raise typer.Exit(EXIT_ERROR) from None
    typer.echo(
        f"wrote {result.path} ({result.size} bytes, {result.blobs} blobs; "
        f"manifest.json for {result.platform}; tags {', '.join(result.repo_tags)})"
    )


async def _instance(spec: LoadedSpec, tag: str, resolver: Resolver) -> LoadedSpec:
    """The spec to save: itself, or the one instance of a fan-out spec its tag names."""
    from reconciler.errors import ResolveError

    if not spec.body.fans_out:
        if tag:
            raise ResolveError(f"{spec.name} does not fan out; save it as {spec.name}")
        return spec
    expanded = await resolver.fan_out(spec)
    chosen = [one for one in expanded if one.name == f"{spec.name}[{tag}]"]
    if not chosen:
        names = ", ".join(one.name for one in expanded)
        raise ResolveError(f"{spec.name} fans out; save one of its images: {names}")
    return chosen[0]


def _pick_spec(spec: str, settings: Settings) -> LoadedSpec:
    from reconciler.spec import load_specs

    path = Path(spec)
    loaded = load_specs([path] if path.exists() else [settings.specs_dir])
    matches = [s for s in loaded.specs if path.exists() or s.name == spec]
    if len(matches) != 1:
        _print_errors(loaded)
        found = ", ".join(s.name for s in matches) or "none"
        typer.echo(f"error: {spec!r} must name exactly one valid spec (found: {found})", err=True)
        raise typer.Exit(EXIT_ERROR)
    return matches[0]


config_app = typer.Typer(
    help="Check a settings file before deploying it.", no_args_is_help=True, cls=_Group
)
app.add_typer(config_app, name="config")


@config_app.command("check")
def config_check(
    file: Annotated[
        Path | None,
        typer.Argument(help="The settings file (default: --config, RECONCILER_CONFIG)."),
    ] = None,
    root: Annotated[
        Path | None,
        typer.Option(
            help="Look for the absolute paths the file names under this directory (a "
            "rendering's mounted files laid out before deploy)."
        ),
    ] = None,
) -> None:
    """Validate a settings file and that every file it names exists and reads; starts
    nothing, sends nothing. Exit 0 good, 1 not."""
    from reconciler.errors import ReconcilerError, SettingsError
    from reconciler.settings import load_settings
    from reconciler.trust.policy import load_policy_file

    where = file if file is not None else _config.get()
    try:
        settings = load_settings(where)  # strict: the daemon's settings too
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_ERROR) from None

    def located(path: Path) -> Path:
        return root / path.relative_to("/") if root is not None and path.is_absolute() else path

    problems: list[str] = []
    named = settings.named_files()
    for setting, path in named:
        actual = located(path)
        try:
            with actual.open("rb") as handle:
                handle.read(1)
        except OSError as exc:
            problems.append(f"{setting}: {path}: {exc.strerror or exc}")
    policy = settings.trust_policy
    if policy is not None and not any(p.startswith("trust_policy:") for p in problems):
        try:
            load_policy_file(located(policy))
        except (ReconcilerError, OSError) as exc:
            problems.append(f"trust_policy: {policy}: {exc}")
    for problem in problems:
        typer.echo(f"error: {problem}", err=True)
    if problems:
        raise typer.Exit(EXIT_ERROR)
    typer.echo(
        f"{where or 'the environment and defaults'}: valid; "
        f"{_plural(len(named), 'file')} named, each readable"
    )


@app.command()
def schema() -> None:
    """Print the JSON Schema of image specs (for editors and CI)."""
    from reconciler.spec import json_schema_text

    typer.echo(json_schema_text())


def _version(value: bool) -> None:
    if value:
        typer.echo(f"reconciler {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log at DEBUG, whatever log_level says.")
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="Settings file (YAML), for any command."),
    ] = None,
) -> None:
    """GitOps reconciler for container images."""
    _verbose.set(verbose)
    _config.set(config)


class _RichProgress:
    """Transfer bars on a terminal (stderr); absent when stderr is not a terminal."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._tasks: dict[str, object] = {}
        self._progress.start()

    def start(self, key: str, label: str, total: int) -> None:
        self._tasks[key] = self._progress.add_task(label, total=total)

    def advance(self, key: str, amount: int) -> None:
        task = self._tasks.get(key)
        if task is not None:
            self._progress.advance(task, amount)  # type: ignore[arg-type]

    def finish(self, key: str) -> None:
        task = self._tasks.pop(key, None)
        if task is not None:
            self._progress.remove_task(task)  # type: ignore[arg-type]

    def close(self) -> None:
        self._progress.stop()


def _terminal_progress() -> _RichProgress | None:
    return _RichProgress() if sys.stderr.isatty() else None


def _unwrapped(doc: str) -> str:
    """A docstring as help: its paragraphs each on one line (rich keeps a docstring's line
    breaks, so `serve /healthz,` ended a line of its own at 80 columns)."""
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


for _typer in (app, config_app):
    for _info in _typer.registered_commands:
        if _info.help is None and _info.callback is not None and _info.callback.__doc__:
            _info.help = _unwrapped(_info.callback.__doc__)


def main() -> None:
    # reconciler uses no pydantic plugins: without this, the first model built scans every
    # installed distribution's entry points for them (about 3 ms of each start). A value the
    # environment already has wins; child processes (daemon hooks) inherit it, and only
    # pydantic reads it.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "1")
    # A young generation of 20,000 objects, not 700: loading 10,000 specs and a pass over them
    # allocate millions of objects that live to the end, and each collection of the older
    # generations walked them (profiled over 10,000 specs: 2 s of a no-op's CPU in 1,470
    # collections; 0.4 s in 37 with this). Garbage in cycles waits a little longer.
    gc.set_threshold(20_000, 20, 20)
    try:
        app()
        code = EXIT_OK
    except SystemExit as exc:
        code = _exit_code(exc.code)
    _exit_now(code)


def _exit_code(code: object) -> int:
    if code is None or isinstance(code, int):
        return code or EXIT_OK
    print(code, file=sys.stderr)  # as the interpreter does with a message
    return EXIT_ERROR


def _exit_now(code: int) -> None:
    """End the process without the interpreter's teardown of every module and object: that
    took 60-90 ms of a 0.35 s diff of one spec. What an exit must do still happens, in the
    interpreter's order: the atexit handlers (tempfile's finalizers among them), logging's
    flush, then stdout and stderr."""
    import atexit
    import contextlib
    import logging

    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        # A closed pipe (`| head`): nothing more can be said there.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
