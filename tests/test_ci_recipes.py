"""The CI recipes of docs/ci.md, run as CI would run them: their shell steps, in order, with
bash -eo pipefail, against a specs repository in a temp dir and a real registry. Only what is
not reconciler's (checkout, pip install) is stood in for; `gh` and `curl` are fakes that
record what would be posted, and `gh --jq` filters run through the real jq."""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reconciler.render import MARKDOWN_MARKER
from tests.conftest import World
from tests.support.images import skopeo

ROOT = Path(__file__).resolve().parent.parent
GITHUB = ROOT / "examples" / "ci" / "github-actions.yaml"
GITLAB = ROOT / "examples" / "ci" / "gitlab-ci.yml"
HOOKS = ROOT / ".pre-commit-hooks.yaml"
BIN = Path(sys.executable).parent  # the venv's `reconciler` stands in for `pip install`
SECRET = "ci-robot:hunter2-never-printed"
BOT_ID = 5150  # the GitLab token's own user, as the fake /user answers

FAKE_GH = """
import json, os, shutil, subprocess, sys
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(["gh", *args]) + "\\n")
if args[0] == "api" and "--method" not in args:  # list comments, filtered by the recipe's jq
    jq = args[args.index("--jq") + 1]
    out = subprocess.run(["jq", "-r", jq], input=os.environ.get("FAKE_COMMENTS", "[]"),
                         capture_output=True, text=True, check=True)
    sys.stdout.write(out.stdout)
elif args[:2] == ["pr", "comment"]:
    shutil.copy(args[args.index("--body-file") + 1], os.environ["FAKE_BODY"])
else:
    field = args[args.index("-F") + 1]
    assert field.startswith("body=@"), field
    shutil.copy(field[len("body=@"):], os.environ["FAKE_BODY"])
"""

FAKE_CURL = """
import json, os, shutil, sys
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(["curl", *args]) + "\\n")
url = args[-1]
if "--data-urlencode" in args:
    value = args[args.index("--data-urlencode") + 1]
    assert value.startswith("body@"), value
    shutil.copy(value[len("body@"):], os.environ["FAKE_BODY"])
    print("{}")
elif url.endswith("/user"):
    print(json.dumps({"id": int(os.environ["FAKE_USER_ID"])}))
else:
    print(os.environ.get("FAKE_COMMENTS", "[]"))
"""


@dataclass
class Repo:
    """A specs repository checked out in a temp dir, and the machine a CI job runs on."""

    root: Path
    registry: str
    log: Path = field(init=False)
    body: Path = field(init=False)
    fakes: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log, self.body = self.root / "fake.log", self.root / "posted.md"
        self.fakes = self.root / "fake-bin"
        self.fakes.mkdir()
        for name, source in (("gh", FAKE_GH), ("curl", FAKE_CURL)):
            tool = self.fakes / name
            tool.write_text(f"#!{sys.executable}\n{textwrap.dedent(source)}")
            tool.chmod(0o755)
        self.checkout = self.root / "checkout"
        (self.checkout / "specs").mkdir(parents=True)

    def spec(self, name: str, base: str, target: str) -> None:
        (self.checkout / "specs" / f"{name}.yaml").write_text(
            "apiVersion: reconciler.dev/v1alpha1\nkind: ImageSpec\n"
            f'spec:\n  base: {base}\n  annotations: {{ci: "yes"}}\n  targets: [{target}]\n'
        )

    def docker_config(self) -> str:
        auth = base64.b64encode(SECRET.encode()).decode()
        return json.dumps({"auths": {self.registry: {"auth": auth}}})

    def env(self, **extra: str) -> dict[str, str]:
        drop = ("RECONCILER_", "DOCKER_CONFIG", "REGISTRY_AUTH_FILE", "GITHUB_", "CI_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
        env.update(
            PATH=f"{self.fakes}:{BIN}:{env.get('PATH', '/usr/bin:/bin')}",
            HOME=str(self.root / "home"),  # no user config, no cache outside the temp dir
            RECONCILER_RETRY_DELAY="0.02",
            FAKE_LOG=str(self.log),
            FAKE_BODY=str(self.body),
            FAKE_USER_ID=str(BOT_ID),
        )
        env.update(extra)
        return env

    def posted(self) -> str:
        return self.body.read_text()

    def calls(self, tool: str) -> list[list[str]]:
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return [call[1:] for call in map(json.loads, lines) if call[0] == tool]


def bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """As GitHub's and GitLab's runners run a script: bash, stop at the first failure."""
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def is_lock_check(script: str) -> bool:
    """Lock steps run in test_recipes_lock_check, which writes the lock they check first."""
    return "reconciler lock --check" in script


def seed_base(world: World) -> str:
    """A base of its own on registry a, so that moving its tag disturbs no other test."""
    base = f"{world.a.host}/ci/base-{uuid.uuid4().hex[:8]}:1"
    skopeo("copy", "--all", "--preserve-digests", "--src-tls-verify=false",
           "--dest-tls-verify=false", f"docker://{world.a.host}/base/single:1",
           f"docker://{base}")  # fmt: skip
    return base


def new_repo(tmp_path: Path, world: World) -> Repo:
    repo = Repo(tmp_path, world.a.host)
    target = f"{world.a.host}/ci/web-{uuid.uuid4().hex[:8]}:1"
    repo.spec("web", seed_base(world), target)
    return repo


def test_docs_show_the_recipes_as_they_are() -> None:
    """docs/ci.md shows each recipe whole; this keeps the page and the files from drifting."""
    page = (ROOT / "docs" / "ci.md").read_text()
    for recipe in (GITHUB, GITLAB, HOOKS):
        assert f"```yaml\n{recipe.read_text()}```\n" in page, recipe.name
    assert "examples/ci/" in page


# GitHub Actions


def _expression(value: str, context: dict[str, str]) -> str:
    """${{ ... }} as Actions expands it, for the names the recipe uses."""
    return re.sub(r"\$\{\{\s*(.+?)\s*\}\}", lambda m: context[m.group(1)], value)


@dataclass
class GithubRun:
    results: dict[str, subprocess.CompletedProcess[str]]  # by step name
    outputs: dict[str, dict[str, str]]  # by step id

    def failed(self) -> list[str]:
        return [name for name, result in self.results.items() if result.returncode != 0]


def github_steps() -> list[dict[str, Any]]:
    workflow = yaml.safe_load(GITHUB.read_text())
    steps: list[dict[str, Any]] = workflow["jobs"]["plan"]["steps"]
    return steps


def misspell(script: str, typo: bool) -> str:
    """The recipe as a team that mistyped diff's output flag in its copy would have it."""
    if not typo:
        return script
    assert "-o markdown" in script or "reconciler diff" not in script
    return script.replace("-o markdown", "--outptu markdown")


def run_github(
    repo: Repo,
    *,
    comments: list[dict[str, Any]] | None = None,
    lock: bool = False,
    typo: bool = False,
) -> GithubRun:
    """Each `run:` step in order, as the runner would: the job's and the step's env (secrets
    and contexts filled in), GITHUB_ENV carried to later steps, GITHUB_OUTPUT per step id.
    A step with `if: always() && ...` runs after a failure too; any other step does not."""
    workflow = yaml.safe_load(GITHUB.read_text())
    job = workflow["jobs"]["plan"]
    temp = repo.root / "runner-temp"
    temp.mkdir(exist_ok=True)
    files = {"GITHUB_ENV": temp / "env", "GITHUB_OUTPUT": temp / "output"}
    carried: dict[str, str] = {}
    run = GithubRun({}, {})
    for step in job["steps"]:
        if "uses" in step or step.get("name") == "Install reconciler":
            continue  # checkout, setup-python, pip install: the temp dir and the venv stand in
        if is_lock_check(step["run"]) and not lock:
            continue
        if run.failed() and "always()" not in step.get("if", ""):
            continue
        context = {
            "secrets.RECONCILER_DOCKER_CONFIG": repo.docker_config(),
            "github.token": "ghs_test-token",
            "github.event.pull_request.number": "7",
            "steps.diff.outputs.code": run.outputs.get("diff", {}).get("code", ""),
        }
        if "if" in step and not _github_if(step["if"], context):
            continue
        for path in files.values():
            path.write_text("")
        env = repo.env(
            RUNNER_TEMP=str(temp),
            GITHUB_REPOSITORY="example/specs",
            FAKE_COMMENTS=json.dumps(comments or []),
            **{k: str(v) for k, v in files.items()},
            **{k: _expression(str(v), context) for k, v in job.get("env", {}).items()},
            **carried,
            **{k: _expression(str(v), context) for k, v in step.get("env", {}).items()},
        )
        result = bash(misspell(step["run"], typo), repo.checkout, env)
        run.results[step["name"]] = result
        carried.update(_key_values(files["GITHUB_ENV"]))
        if "id" in step:
            run.outputs[step["id"]] = _key_values(files["GITHUB_OUTPUT"])
    return run


def _github_if(condition: str, context: dict[str, str]) -> bool:
    """The one form of condition the recipe uses: always() && steps.diff.outputs.code != ''."""
    assert condition == "${{ always() && steps.diff.outputs.code != '' }}", condition
    return context["steps.diff.outputs.code"] != ""


def _key_values(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line)


def test_github_workflow_shape() -> None:
    workflow = yaml.safe_load(GITHUB.read_text())
    assert workflow[True]["pull_request"]["paths"][0] == "specs/**"  # YAML 1.1 reads `on` so
    assert workflow["permissions"] == {"contents": "read", "pull-requests": "write"}
    scripts = [step.get("run", "") for step in github_steps()]
    for command in ("reconciler validate", "reconciler lock --check", "reconciler diff"):
        assert sum(command in script for script in scripts) == 1, command
    assert any('pip install "reconciler==' in script for script in scripts)
    for step in github_steps():  # no expression inside a script: values come in through env
        assert "${{" not in step.get("run", ""), step["name"]
    secrets = [v for step in github_steps() for v in step.get("env", {}).values()]
    assert "${{ secrets.RECONCILER_DOCKER_CONFIG }}" in secrets


def test_github_changes_pass_and_are_posted(tmp_path: Path, world: World) -> None:
    repo = new_repo(tmp_path, world)
    run = run_github(repo)
    assert run.failed() == [], {k: v.stderr for k, v in run.results.items()}
    assert list(run.results) == [
        "Registry credentials",
        "Validate specs",
        "Diff",
        "Comment on the pull request",
        "Diff succeeded",
    ]
    assert run.outputs["diff"] == {"code": "2"}  # changes: the check passes
    posted = repo.posted()
    assert posted.startswith(MARKDOWN_MARKER + "\n### reconciler diff\n")
    assert re.search(r"^\| <code>web</code> \| OutOfSync \| 1 \| \d+ \| .+ \|$", posted, re.M)
    assert repo.calls("gh")[-1][:2] == ["pr", "comment"]  # no earlier comment: a new one
    config = tmp_path / "runner-temp" / "docker" / "config.json"
    assert json.loads(config.read_text()) == json.loads(repo.docker_config())
    assert oct(config.stat().st_mode & 0o777) == "0o600"
    everything = posted + "".join(r.stdout + r.stderr for r in run.results.values())
    assert SECRET not in everything and base64.b64encode(SECRET.encode()).decode() not in everything


def test_github_edits_its_own_earlier_comment(tmp_path: Path, world: World) -> None:
    repo = new_repo(tmp_path, world)
    comments = [
        {"id": 11, "user": {"login": "someone"}, "body": f"{MARKDOWN_MARKER}\nnot ours"},
        {"id": 12, "user": {"login": "github-actions[bot]"}, "body": "another workflow's"},
        {"id": 13, "user": {"login": "github-actions[bot]"}, "body": f"{MARKDOWN_MARKER}\nold"},
    ]
    run = run_github(repo, comments=comments)
    assert run.failed() == []
    call = repo.calls("gh")[-1]
    assert call[:4] == ["api", "--method", "PATCH", "repos/example/specs/issues/comments/13"]
    assert "| <code>web</code> | OutOfSync |" in repo.posted()


def test_github_an_error_is_posted_then_fails_the_job(tmp_path: Path, world: World) -> None:
    repo = new_repo(tmp_path, world)
    repo.spec("down", "127.0.0.1:9/base:1", "127.0.0.1:9/app:1")
    run = run_github(repo)
    assert run.outputs["diff"] == {"code": "1"}
    assert run.failed() == ["Diff succeeded"]  # the diff step itself records, never fails
    assert "| <code>down</code> | Failed |" in repo.posted()


def test_github_a_misspelt_flag_fails_the_job(tmp_path: Path, world: World) -> None:
    """Before: a usage error exited 2, which the recipe takes for "changes": a green job
    with an empty comment. Now 64, which the diff step itself fails on."""
    repo = new_repo(tmp_path, world)
    run = run_github(repo, typo=True)
    assert run.failed() == ["Diff"] and run.results["Diff"].returncode == 64
    assert "No such option: --outptu" in run.results["Diff"].stderr
    assert run.outputs["diff"] == {}  # no code: the comment and the last step do not run
    assert list(run.results)[-1] == "Diff" and not repo.calls("gh")


def test_github_invalid_specs_stop_before_the_diff(tmp_path: Path, world: World) -> None:
    repo = new_repo(tmp_path, world)
    (repo.checkout / "specs" / "bad.yaml").write_text("apiVersion: reconciler.dev/v1alpha1\n")
    run = run_github(repo)
    assert run.failed() == ["Validate specs"] and "Diff" not in run.results
    assert not repo.body.exists()


# GitLab CI


def gitlab_job() -> dict[str, Any]:
    job: dict[str, Any] = yaml.safe_load(GITLAB.read_text())["reconciler"]
    return job


def run_gitlab(
    repo: Repo,
    *,
    notes: list[dict[str, Any]] | None = None,
    lock: bool = False,
    typo: bool = False,
) -> subprocess.CompletedProcess[str]:
    """The job's script as one shell (the runner's way: variables persist between lines, the
    first failing line ends the job), with the job's variables and GitLab's predefined ones."""
    job = gitlab_job()
    assert job["before_script"] == ['python -m pip install "reconciler==0.1.0"']  # the venv's
    config = repo.root / "docker-config.json"  # a File variable: GitLab hands over a path
    config.write_text(repo.docker_config())
    predefined = {
        "CI_PROJECT_DIR": str(repo.checkout),
        "CI_API_V4_URL": "https://gitlab.example.com/api/v4",
        "CI_PROJECT_ID": "42",
        "CI_MERGE_REQUEST_IID": "7",
        "RECONCILER_DOCKER_CONFIG": str(config),
        "RECONCILER_GITLAB_TOKEN": "glpat-test-token",
    }
    variables = {
        k: re.sub(r"\$(\w+)", lambda m: predefined[m.group(1)], v)
        for k, v in job["variables"].items()
    }
    lines = [line for line in job["script"] if lock or not is_lock_check(line)]
    env = repo.env(**predefined, **variables, FAKE_COMMENTS=json.dumps(notes or []))
    return bash(misspell("\n".join(lines), typo), repo.checkout, env)


def test_gitlab_job_shape() -> None:
    job = gitlab_job()
    assert job["rules"][0]["if"] == '$CI_PIPELINE_SOURCE == "merge_request_event"'
    script = "\n".join(job["script"])
    for command in ("reconciler validate", "reconciler lock --check", "reconciler diff"):
        assert script.count(command) == 1, command
    assert "-o markdown > diff.md" in script and job["artifacts"]["paths"] == ["diff.md"]
    assert "$RECONCILER_GITLAB_TOKEN" in script and "glpat" not in GITLAB.read_text()


def test_gitlab_changes_pass_and_are_posted(tmp_path: Path, world: World) -> None:
    repo = new_repo(tmp_path, world)
    result = run_gitlab(repo)
    assert result.returncode == 0, result.stdout + result.stderr
    posted = repo.posted()
    assert posted == (repo.checkout / "diff.md").read_text()
    assert re.search(r"^\| <code>web</code> \| OutOfSync \| 1 \| \d+ \| .+ \|$", posted, re.M)
    post = repo.calls("curl")[-1]
    assert post[-1] == "https://gitlab.example.com/api/v4/projects/42/merge_requests/7/notes"
    assert "PRIVATE-TOKEN: glpat-test-token" in post and "PUT" not in post
    assert SECRET not in result.stdout + result.stderr + posted
    assert (repo.checkout / ".reconciler-state").is_dir()  # the cached state dir is used


def test_gitlab_edits_its_own_earlier_note(tmp_path: Path, world: World) -> None:
    repo = new_repo(tmp_path, world)
    notes = [
        {"id": 21, "author": {"id": 1}, "body": f"{MARKDOWN_MARKER}\nsomeone's"},
        {"id": 22, "author": {"id": BOT_ID}, "body": f"{MARKDOWN_MARKER}\nold"},
    ]
    result = run_gitlab(repo, notes=notes)
    assert result.returncode == 0, result.stderr
    put = repo.calls("curl")[-1]
    assert "PUT" in put and put[-1].endswith("/merge_requests/7/notes/22")


def test_gitlab_an_error_is_posted_then_fails_the_job(tmp_path: Path, world: World) -> None:
    repo = new_repo(tmp_path, world)
    repo.spec("down", "127.0.0.1:9/base:1", "127.0.0.1:9/app:1")
    result = run_gitlab(repo)
    assert result.returncode == 1
    assert "| <code>down</code> | Failed |" in repo.posted()


def test_gitlab_a_misspelt_flag_fails_the_job(tmp_path: Path, world: World) -> None:
    repo = new_repo(tmp_path, world)
    result = run_gitlab(repo, typo=True)
    assert result.returncode == 64, result.stderr
    assert "No such option: --outptu" in result.stderr
    assert not repo.calls("curl")  # nothing posted: the job ended before the note


def test_recipes_fail_on_a_wrong_specs_path(tmp_path: Path, world: World) -> None:
    """An empty specs directory (a wrong SPECS_DIR) is exit 1 at the first step, not a green
    job saying "0 valid specs"."""
    repo = new_repo(tmp_path, world)
    for spec in (repo.checkout / "specs").glob("*.yaml"):
        spec.unlink()
    run = run_github(repo)
    assert run.failed() == ["Validate specs"]
    assert "no spec file" in run.results["Validate specs"].stderr
    assert run_gitlab(repo).returncode == 1


# pre-commit


def hooks() -> list[dict[str, Any]]:
    value: list[dict[str, Any]] = yaml.safe_load(HOOKS.read_text())
    return value


def test_pre_commit_hooks_structure() -> None:
    by_id = {hook["id"]: hook for hook in hooks()}
    assert list(by_id) == ["reconciler-validate", "reconciler-lock-check"]
    assert by_id["reconciler-validate"]["entry"] == "reconciler validate"
    assert by_id["reconciler-lock-check"]["entry"] == "reconciler lock --check"
    for hook in hooks():
        assert {"id", "name", "entry", "language"} <= set(hook), hook
        assert all(isinstance(hook[key], str) and hook[key] for key in ("id", "name", "entry"))
        assert hook["language"] == "python" and hook["pass_filenames"] is False
        files = re.compile(hook["files"])
        assert files.search("specs/team/web.yaml") and files.search("specs/reconciler.lock")
        assert not files.search("README.md") and not files.search("specs/notreconciler.lock")


def run_hook(repo: Repo, hook_id: str) -> subprocess.CompletedProcess[str]:
    """pre-commit's way: the entry, split like a shell, then the user's `args` (here [specs])."""
    hook = next(hook for hook in hooks() if hook["id"] == hook_id)
    return subprocess.run(
        [*shlex.split(hook["entry"]), "specs"],
        cwd=repo.checkout,
        env=repo.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_pre_commit_validate_hook(tmp_path: Path, world: World) -> None:
    repo = new_repo(tmp_path, world)
    ok = run_hook(repo, "reconciler-validate")
    assert ok.returncode == 0 and "1 valid spec in 1 file" in ok.stderr, ok.stderr
    (repo.checkout / "specs" / "bad.yaml").write_text("apiVersion: reconciler.dev/v1alpha1\n")
    bad = run_hook(repo, "reconciler-validate")
    assert bad.returncode == 1 and "bad.yaml" in bad.stderr


# reconciler lock --check, in all three recipes


def test_recipes_lock_check(tmp_path: Path, world: World) -> None:
    """With the lock committed, each recipe's lock step passes; once the base tag moves
    upstream, it fails (exit 2: stale), and the GitHub job stops before the diff."""
    repo = new_repo(tmp_path, world)
    written = subprocess.run(
        ["reconciler", "lock", "specs"], cwd=repo.checkout, env=repo.env(),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert written.returncode == 0, written.stdout + written.stderr
    assert (repo.checkout / "specs" / "reconciler.lock").is_file()

    assert run_hook(repo, "reconciler-lock-check").returncode == 0
    github = run_github(repo, lock=True)
    assert github.failed() == [] and "Lock file is current" in github.results
    assert run_gitlab(repo, lock=True).returncode == 0

    base = yaml.safe_load((repo.checkout / "specs" / "web.yaml").read_text())["spec"]["base"]
    skopeo("copy", "--all", "--preserve-digests", "--src-tls-verify=false",
           "--dest-tls-verify=false", f"docker://{world.a.host}/base/multi:1",
           f"docker://{base}")  # fmt: skip
    assert run_hook(repo, "reconciler-lock-check").returncode == 2
    stale = run_github(repo, lock=True)
    assert stale.failed() == ["Lock file is current"] and "Diff" not in stale.results
    assert run_gitlab(repo, lock=True).returncode == 2
